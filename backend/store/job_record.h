// Job: the record of one control request (checkpoint, backup, release), as
// the daemon's job table keeps it (mountd/jobs.h) and the catalog persists it
// (Catalog::PutJob). Plain data: the store needs the record and its JSON form,
// not the table, so both live here, below the daemon.
//
// Thread safety: plain values and pure functions; callers synchronise.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ckptfs {

struct Job {
  std::string id;
  std::string kind;     // checkpoint | backup | release
  std::string request;  // the request line, sanitised
  std::string domain;
  std::string checkpoint;
  std::string mode;  // full | incremental, once known
  std::string base;
  // Incremental jobs: the disks copied in full all the same, because their
  // bitmap of the base was missing or inconsistent.
  std::vector<std::string> full_disks;
  std::string state = "queued";  // queued|running|succeeded|failed|rejected
  std::string error;
  std::string code;              // CodeName of the error
  uint64_t done = 0, total = 0;  // progress, bytes
  int64_t created_ms = 0, started_ms = 0, ended_ms = 0;
};

// The record as control/jobs/<id>.json and the catalog's json column hold it.
nlohmann::json JobToJson(const Job& job);

// Parses a record written by JobToJson. Tolerant: missing or mistyped
// fields keep Job's defaults; times have second precision.
Job JobFromJson(const nlohmann::json& j);

// "" becomes null in JSON records.
nlohmann::json StrOrNull(const std::string& s);

}  // namespace ckptfs
