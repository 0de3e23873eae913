// The open files of the namespace: bytes fixed at open (README, info.json, a
// rendered job record), a checkpoint's disk image, and a control file that
// turns each write() into a request.
//
// Thread safety: the kernel may issue concurrent reads on one handle; every
// handle here allows it (ControlHandle guards its reply with a mutex).
#pragma once

#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "backend/image_source.h"
#include "fs/checkpoint_view.h"
#include "fs/filesystem.h"

namespace ckptfs {

class NamespaceHost;

// Serves bytes fixed at open (README, info.json, a rendered job record).
class StringHandle : public FileHandle {
 public:
  StringHandle(std::string content, bool direct)
      : content_(std::move(content)), direct_(direct) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override;
  Result<uint64_t> Seek(uint64_t offset, int whence) override;
  bool keep_cache() const override { return !direct_; }
  bool direct_io() const override { return direct_; }

 private:
  const std::string content_;
  const bool direct_;
};

// A disk image of a checkpoint: immutable, so the kernel keeps its pages.
class ImageHandle : public FileHandle {
 public:
  // `image` is what reads go through: the disk's image as
  // NamespaceHost::HoldImage returned it (a stored disk's manifest stays in
  // memory while a handle holds it).
  ImageHandle(std::shared_ptr<const CheckpointDisk> disk,
              std::shared_ptr<ImageSource> image)
      : disk_(std::move(disk)), image_(std::move(image)) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override;
  Result<uint64_t> Seek(uint64_t offset, int whence) override;
  bool keep_cache() const override { return true; }

 private:
  const std::shared_ptr<const CheckpointDisk> disk_;
  const std::shared_ptr<ImageSource> image_;
};

// control/<kind>: each write() is one request; a read() returns the reply
// to the last request made through this open file. A read that continues
// where the write left the file offset (open O_RDWR, write, read) gets the
// reply from its start, as does a pread at offset 0.
class ControlHandle : public FileHandle {
 public:
  // `kind` is the control file's name (checkpoint, backup, release).
  ControlHandle(NamespaceHost& host, std::string kind)
      : host_(host), kind_(std::move(kind)) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override;
  Result<size_t> Write(std::span<const std::byte> data,
                       uint64_t offset) override;
  Result<uint64_t> Seek(uint64_t, int) override {
    return Status(Code::kOutOfRange, "control files hold no data");
  }
  bool direct_io() const override { return true; }

 private:
  NamespaceHost& host_;
  const std::string kind_;
  std::mutex mu_;
  std::string reply_;          // guarded by mu_
  uint64_t reply_offset_ = 0;  // guarded by mu_
};

}  // namespace ckptfs
