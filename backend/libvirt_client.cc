#include "backend/libvirt_client.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <limits>
#include <random>
#include <thread>

#include "backend/xml.h"

namespace ckptfs {
namespace {

std::string LastError() {
  const char* m = virGetLastErrorMessage();
  return m ? m : "unknown libvirt error";
}

Status LibvirtError(const std::string& what) {
  virErrorPtr e = virGetLastError();
  Code code = Code::kIoError;
  if (e) {
    switch (e->code) {
      case VIR_ERR_NO_DOMAIN:
      case VIR_ERR_NO_DOMAIN_CHECKPOINT:
        code = Code::kNotFound;
        break;
      case VIR_ERR_OPERATION_INVALID:
      case VIR_ERR_XML_ERROR:
      case VIR_ERR_INVALID_ARG:
      case VIR_ERR_CONFIG_UNSUPPORTED:
        code = Code::kInvalidArgument;
        break;
      case VIR_ERR_OPERATION_TIMEOUT:
        code = Code::kBusy;
        break;
      default:
        break;
    }
  }
  return Status(code, what + ": " + LastError());
}

// The default event loop is process-wide; it runs on one detached thread for
// the life of the process (libvirt offers no way to unregister it).
void StartEventLoop() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Errors are returned to callers and logged there, not printed by
    // libvirt on stderr.
    virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
    virEventRegisterDefaultImpl();
    // A periodic timer keeps the loop iterating even with no fds ready.
    virEventAddTimeout(
        1000, [](int, void*) {}, nullptr, nullptr);
    std::thread([] {
      for (;;) {
        if (virEventRunDefaultImpl() < 0) {
          spdlog::warn("libvirt event loop: {}", LastError());
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    }).detach();
  });
}

struct DomainFree {
  void operator()(virDomainPtr d) const { virDomainFree(d); }
};
using DomainPtr = std::unique_ptr<virDomain, DomainFree>;

struct CheckpointFree {
  void operator()(virDomainCheckpointPtr c) const {
    virDomainCheckpointFree(c);
  }
};
using CheckpointPtr = std::unique_ptr<virDomainCheckpoint, CheckpointFree>;

std::string TakeString(char* s) {
  std::string out = s ? s : "";
  free(s);  // NOLINT: libvirt allocates with malloc
  return out;
}

}  // namespace

// The handler behind a client's event registrations. Deliveries and
// StopEvents() are serialised, so once StopEvents() returns the owner may go
// away even while libvirt still dispatches an event of a connection that is
// being closed. This object itself must outlive that dispatch: deregistering
// does not wait for a callback already running on the event loop thread, so
// every registration holds a reference of its own, which libvirt drops (the
// free callback) once no dispatch uses it any more.
struct LibvirtEvents {
  std::mutex mu;
  LibvirtClient::EventHandler handler;  // guarded by mu; empty once stopped

  void Deliver(const DomainEvent& e) {
    std::lock_guard lock(mu);
    if (handler) handler(e);
  }
};

// One open connection plus its event registrations. Shared by in-flight
// calls so a reconnect never closes a connection under a caller.
struct LibvirtClient::Conn {
  virConnectPtr conn = nullptr;
  std::vector<int> callbacks;
  std::atomic<bool> closed{false};

  ~Conn() {
    for (int id : callbacks) virConnectDomainEventDeregisterAny(conn, id);
    if (conn) virConnectClose(conn);
  }

  Result<DomainPtr> Lookup(const std::string& name) const {
    virDomainPtr d = virDomainLookupByName(conn, name.c_str());
    if (!d) return LibvirtError("domain " + name);
    return DomainPtr(d);
  }
};

namespace {

// A registration's opaque pointer: its own reference to the handler.
using EventsRef = std::shared_ptr<LibvirtEvents>;
LibvirtEvents& EventsOf(void* opaque) {
  return **static_cast<EventsRef*>(opaque);
}
void FreeEventsRef(void* opaque) { delete static_cast<EventsRef*>(opaque); }

int OnLifecycle(virConnectPtr, virDomainPtr dom, int event, int, void* opaque) {
  DomainEvent::Kind kind = DomainEvent::Kind::kOther;
  switch (event) {
    case VIR_DOMAIN_EVENT_DEFINED:
      kind = DomainEvent::Kind::kDefined;
      break;
    case VIR_DOMAIN_EVENT_UNDEFINED:
      kind = DomainEvent::Kind::kUndefined;
      break;
    case VIR_DOMAIN_EVENT_STARTED:
      kind = DomainEvent::Kind::kStarted;
      break;
    case VIR_DOMAIN_EVENT_STOPPED:
    case VIR_DOMAIN_EVENT_CRASHED:
      kind = DomainEvent::Kind::kStopped;
      break;
    default:
      break;
  }
  EventsOf(opaque).Deliver({kind, virDomainGetName(dom)});
  return 0;
}

void OnJobCompleted(virConnectPtr, virDomainPtr dom, virTypedParameterPtr, int,
                    void* opaque) {
  EventsOf(opaque).Deliver(
      {DomainEvent::Kind::kJobCompleted, virDomainGetName(dom)});
}

void OnClose(virConnectPtr, int reason, void* opaque) {
  spdlog::warn("libvirt connection closed (reason {})", reason);
  static_cast<std::atomic<bool>*>(opaque)->store(true);
}

}  // namespace

LibvirtClient::LibvirtClient(std::string uri, EventHandler on_event)
    : uri_(std::move(uri)), events_(std::make_shared<LibvirtEvents>()) {
  events_->handler = std::move(on_event);
}

LibvirtClient::~LibvirtClient() { StopEvents(); }

void LibvirtClient::StopEvents() {
  std::lock_guard lock(events_->mu);
  events_->handler = nullptr;
}

Result<std::unique_ptr<LibvirtClient>> LibvirtClient::Connect(
    const std::string& uri, EventHandler on_event) {
  StartEventLoop();
  std::unique_ptr<LibvirtClient> c(new LibvirtClient(uri, std::move(on_event)));
  std::lock_guard lock(c->mu_);
  RETURN_IF_ERROR(c->Open());
  return c;
}

Status LibvirtClient::Open() {
  auto conn = std::make_shared<Conn>();
  conn->conn = virConnectOpen(uri_.c_str());
  if (!conn->conn) {
    return Status(Code::kIoError, "cannot connect to libvirt at " + uri_ +
                                      ": " + LastError() +
                                      " (is libvirtd running?)");
  }
  // Keepalive notices a dead libvirtd within ~20 s even while idle.
  virConnectSetKeepAlive(conn->conn, 5, 3);
  virConnectRegisterCloseCallback(conn->conn, OnClose, &conn->closed, nullptr);
  // On failure libvirt does not call the free callback: the reference is
  // ours to drop.
  auto add = [&](int event_id, virConnectDomainEventGenericCallback cb) {
    auto* ref = new EventsRef(events_);
    const int id = virConnectDomainEventRegisterAny(
        conn->conn, nullptr, event_id, cb, ref, FreeEventsRef);
    if (id >= 0) {
      conn->callbacks.push_back(id);
    } else {
      delete ref;
    }
  };
  add(VIR_DOMAIN_EVENT_ID_LIFECYCLE, VIR_DOMAIN_EVENT_CALLBACK(OnLifecycle));
  add(VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
      VIR_DOMAIN_EVENT_CALLBACK(OnJobCompleted));
  conn_ = std::move(conn);
  return Status::Ok();
}

Result<std::shared_ptr<LibvirtClient::Conn>> LibvirtClient::Get() {
  bool reconnected = false;
  std::shared_ptr<Conn> conn;
  {
    std::lock_guard lock(mu_);
    if (!conn_ || conn_->closed || virConnectIsAlive(conn_->conn) != 1) {
      if (conn_) virConnectUnregisterCloseCallback(conn_->conn, OnClose);
      conn_.reset();
      RETURN_IF_ERROR(Open());
      reconnected = true;
      spdlog::info("reconnected to libvirt at {}", uri_);
    }
    conn = conn_;
  }
  if (reconnected) events_->Deliver({DomainEvent::Kind::kReconnected, ""});
  return conn;
}

bool LibvirtClient::alive() {
  std::lock_guard lock(mu_);
  return conn_ && !conn_->closed && virConnectIsAlive(conn_->conn) == 1;
}

Result<std::vector<DomainInfo>> LibvirtClient::ListDomains() {
  ASSIGN_OR_RETURN(auto conn, Get());
  virDomainPtr* doms = nullptr;
  int n = virConnectListAllDomains(conn->conn, &doms, 0);
  if (n < 0) return LibvirtError("list domains");
  std::vector<DomainInfo> out;
  for (int i = 0; i < n; ++i) {
    DomainPtr d(doms[i]);
    std::string xml = TakeString(virDomainGetXMLDesc(d.get(), 0));
    if (xml.empty()) continue;  // undefined meanwhile
    auto info = ParseDomainXml(xml);
    if (!info.ok()) continue;
    info->active = virDomainIsActive(d.get()) == 1;
    info->persistent = virDomainIsPersistent(d.get()) == 1;
    out.push_back(std::move(info).value());
  }
  free(doms);  // NOLINT
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

Result<DomainInfo> LibvirtClient::GetDomain(const std::string& name) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(name));
  std::string xml = TakeString(virDomainGetXMLDesc(d.get(), 0));
  if (xml.empty()) return LibvirtError("domain " + name);
  ASSIGN_OR_RETURN(DomainInfo info, ParseDomainXml(xml));
  info.active = virDomainIsActive(d.get()) == 1;
  info.persistent = virDomainIsPersistent(d.get()) == 1;
  return info;
}

Result<std::vector<CheckpointInfo>> LibvirtClient::ListCheckpoints(
    const std::string& domain) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  virDomainCheckpointPtr* cps = nullptr;
  int n = virDomainListAllCheckpoints(d.get(), &cps, 0);
  if (n < 0) return LibvirtError("list checkpoints of " + domain);
  std::vector<CheckpointInfo> out;
  for (int i = 0; i < n; ++i) {
    CheckpointPtr c(cps[i]);
    std::string xml = TakeString(virDomainCheckpointGetXMLDesc(c.get(), 0));
    auto info = ParseCheckpointXml(xml);
    if (info.ok()) out.push_back(std::move(info).value());
  }
  free(cps);  // NOLINT
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.creation_time < b.creation_time;
  });
  return out;
}

Result<CheckpointInfo> LibvirtClient::GetCheckpoint(const std::string& domain,
                                                    const std::string& name) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  CheckpointPtr c(virDomainCheckpointLookupByName(d.get(), name.c_str(), 0));
  if (!c) return LibvirtError("checkpoint " + name + " of " + domain);
  return ParseCheckpointXml(
      TakeString(virDomainCheckpointGetXMLDesc(c.get(), 0)));
}

Result<std::vector<std::string>> LibvirtClient::UsableBitmaps(
    const std::string& domain, const std::string& name) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  CheckpointPtr c(virDomainCheckpointLookupByName(d.get(), name.c_str(), 0));
  if (!c) return LibvirtError("checkpoint " + name + " of " + domain);
  char* xml = virDomainCheckpointGetXMLDesc(
      c.get(),
      VIR_DOMAIN_CHECKPOINT_XML_SIZE | VIR_DOMAIN_CHECKPOINT_XML_NO_DOMAIN);
  if (!xml) {
    return LibvirtError("bitmaps of checkpoint " + name + " of " + domain);
  }
  ASSIGN_OR_RETURN(CheckpointInfo info, ParseCheckpointXml(TakeString(xml)));
  return info.sized;
}

Result<std::optional<BackupJobInfo>> LibvirtClient::GetBackupJob(
    const std::string& domain) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  char* xml = virDomainBackupGetXMLDesc(d.get(), 0);
  if (!xml) {
    virErrorPtr e = virGetLastError();
    // No backup job is reported as "no domain backup" (or operation
    // invalid on an inactive domain): both mean "none".
    if (e && (e->code == VIR_ERR_NO_DOMAIN_BACKUP ||
              e->code == VIR_ERR_OPERATION_INVALID)) {
      return std::optional<BackupJobInfo>();
    }
    return LibvirtError("backup job of " + domain);
  }
  ASSIGN_OR_RETURN(BackupJobInfo info, ParseBackupXml(TakeString(xml)));
  return std::optional<BackupJobInfo>(std::move(info));
}

Status LibvirtClient::BeginBackup(const std::string& domain,
                                  const std::string& backup_xml,
                                  const std::string& checkpoint_xml) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  if (virDomainBackupBegin(
          d.get(), backup_xml.c_str(),
          checkpoint_xml.empty() ? nullptr : checkpoint_xml.c_str(), 0) < 0) {
    return LibvirtError("backup begin on " + domain);
  }
  return Status::Ok();
}

Status LibvirtClient::AbortJob(const std::string& domain) {
  ASSIGN_OR_RETURN(auto conn, Get());
  ASSIGN_OR_RETURN(DomainPtr d, conn->Lookup(domain));
  if (virDomainAbortJob(d.get()) < 0) {
    Status st = LibvirtError("abort job of " + domain);
    // The job may have ended between our look and the abort (another
    // request's export ending, a job completing): no job is what we wanted.
    virDomainJobInfo info{};
    if (virDomainGetJobInfo(d.get(), &info) == 0 &&
        info.type == VIR_DOMAIN_JOB_NONE) {
      return Status::Ok();
    }
    return st;
  }
  return Status::Ok();
}

Result<DomainInfo> ParseDomainXml(const std::string& xml) {
  ASSIGN_OR_RETURN(XmlDoc doc, XmlDoc::Parse(xml));
  DomainInfo info;
  info.name = doc.Text("/domain/name");
  info.uuid = doc.Text("/domain/uuid");
  if (info.name.empty()) return InvalidArgument("domain XML without a name");
  ASSIGN_OR_RETURN(auto disks, doc.Select("/domain/devices/disk"));
  for (size_t i = 1; i <= disks.size(); ++i) {
    const std::string p = "/domain/devices/disk[" + std::to_string(i) + "]";
    DiskInfo disk;
    disk.device = disks[i - 1].Attr("device", "disk");
    disk.target = doc.Attr(p + "/target", "dev");
    disk.format = doc.Attr(p + "/driver", "type");
    disk.source = doc.Attr(p + "/source", "file");
    if (disk.source.empty()) disk.source = doc.Attr(p + "/source", "dev");
    auto ro = doc.Select(p + "/readonly");
    disk.readonly = ro.ok() && !ro->empty();
    if (!disk.target.empty()) info.disks.push_back(std::move(disk));
  }
  return info;
}

namespace {

constexpr std::string_view kDescriptionPrefix = "created by ckptfs (id ";

// NONCE of a description CheckpointDescription made, else "".
std::string DescriptionNonce(const std::string& description) {
  if (!description.starts_with(kDescriptionPrefix) ||
      !description.ends_with(")")) {
    return "";
  }
  return description.substr(kDescriptionPrefix.size(),
                            description.size() - kDescriptionPrefix.size() - 1);
}

}  // namespace

std::string CheckpointDescription() {
  // 64 bits from the kernel's generator: two checkpoints of one name within
  // one second collide with probability 2^-64.
  std::random_device rd;
  const uint64_t nonce = (uint64_t{rd()} << 32) | rd();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(nonce));
  return std::string(kDescriptionPrefix) + hex + ")";
}

bool IsRecordedCheckpoint(const CheckpointInfo& cp, int64_t recorded_created,
                          const std::string& recorded_xml) {
  if (cp.creation_time != recorded_created) return false;
  auto recorded = ParseCheckpointXml(recorded_xml);
  // A record whose XML does not parse cannot prove it is this checkpoint.
  return recorded.ok() && recorded->nonce == cp.nonce;
}

Result<CheckpointInfo> ParseCheckpointXml(const std::string& xml) {
  ASSIGN_OR_RETURN(XmlDoc doc, XmlDoc::Parse(xml));
  CheckpointInfo info;
  info.name = doc.Text("/domaincheckpoint/name");
  if (info.name.empty()) return InvalidArgument("checkpoint XML without name");
  info.parent = doc.Text("/domaincheckpoint/parent/name");
  info.creation_time = std::strtoll(
      doc.Text("/domaincheckpoint/creationTime", "0").c_str(), nullptr, 10);
  // The tree shows it in milliseconds; strtoll saturates out-of-range text.
  constexpr int64_t kMaxSeconds = std::numeric_limits<int64_t>::max() / 1000;
  if (info.creation_time > kMaxSeconds || info.creation_time < -kMaxSeconds) {
    return InvalidArgument("checkpoint XML with creationTime out of range");
  }
  info.nonce = DescriptionNonce(doc.Text("/domaincheckpoint/description"));
  ASSIGN_OR_RETURN(auto disks, doc.Select("/domaincheckpoint/disks/disk"));
  for (const auto& d : disks) {
    if (d.Attr("checkpoint", "bitmap") == "bitmap") {
      info.disks.push_back(d.Attr("name"));
      if (d.attrs.count("size")) info.sized.push_back(d.Attr("name"));
    }
  }
  info.xml = xml;
  return info;
}

Result<BackupJobInfo> ParseBackupXml(const std::string& xml) {
  ASSIGN_OR_RETURN(XmlDoc doc, XmlDoc::Parse(xml));
  BackupJobInfo info;
  info.mode = doc.Attr("/domainbackup", "mode", "push");
  info.incremental = doc.Text("/domainbackup/incremental");
  info.transport = doc.Attr("/domainbackup/server", "transport", "tcp");
  info.socket = doc.Attr("/domainbackup/server", "socket");
  ASSIGN_OR_RETURN(auto disks, doc.Select("/domainbackup/disks/disk"));
  for (size_t i = 1; i <= disks.size(); ++i) {
    const auto& d = disks[i - 1];
    BackupJobInfo::Disk disk;
    disk.name = d.Attr("name");
    disk.backup = d.Attr("backup", "yes") == "yes";
    disk.export_name = d.Attr("exportname", disk.name);
    disk.export_bitmap = d.Attr("exportbitmap");
    disk.backupmode = d.Attr("backupmode");
    disk.scratch = doc.Attr(
        "/domainbackup/disks/disk[" + std::to_string(i) + "]/scratch", "file");
    info.disks.push_back(std::move(disk));
  }
  return info;
}

}  // namespace ckptfs
