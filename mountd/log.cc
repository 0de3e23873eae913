#include "mountd/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <syslog.h>

namespace ckptfs {

void SetupLogging(bool debug, bool to_syslog) {
  std::shared_ptr<spdlog::logger> logger;
  if (to_syslog) {
    logger = spdlog::syslog_logger_mt("ckptfs-syslog", "ckptfs", LOG_PID,
                                      LOG_DAEMON, true);
    logger->set_pattern("%v");
  } else {
    logger = spdlog::stderr_color_mt("ckptfs-stderr");
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  }
  logger->set_level(debug ? spdlog::level::debug : spdlog::level::info);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace ckptfs
