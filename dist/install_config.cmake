# Installs the systemd unit and /etc/default/ckptfs with the paths of the
# prefix in effect at install time: cpack installs with prefix /usr (into a
# staging DESTDIR) whatever the build dir was configured with, and the unit
# must name the binary and the EnvironmentFile where they land.
# Set by the caller: CKPTFS_DIST_DIR, CKPTFS_BINARY_DIR, CKPTFS_SBIN (sbin
# relative to the prefix).
set(prefix "${CMAKE_INSTALL_PREFIX}")
# GNUInstallDirs' rule: /usr installs configuration into /etc.
if(prefix STREQUAL "/usr" OR prefix STREQUAL "/")
  set(CKPTFS_SYSCONFDIR "/etc")
else()
  set(CKPTFS_SYSCONFDIR "${prefix}/etc")
endif()
set(CKPTFS_SBINDIR "${prefix}/${CKPTFS_SBIN}")
configure_file("${CKPTFS_DIST_DIR}/ckptfs.service.in"
               "${CKPTFS_BINARY_DIR}/dist/ckptfs.service" @ONLY)
file(INSTALL DESTINATION "${prefix}/lib/systemd/system" TYPE FILE
     FILES "${CKPTFS_BINARY_DIR}/dist/ckptfs.service")
file(INSTALL DESTINATION "${CKPTFS_SYSCONFDIR}/default" TYPE FILE
     RENAME ckptfs FILES "${CKPTFS_DIST_DIR}/default.ckptfs")
