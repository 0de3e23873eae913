// Logging: spdlog to stderr in the foreground, to syslog (daemon facility)
// once daemonised. Levels: info by default, debug with --debug.
#pragma once

namespace ckptfs {

void SetupLogging(bool debug, bool to_syslog);

}  // namespace ckptfs
