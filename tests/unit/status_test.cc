#include "backend/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace ckptfs {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  ASSIGN_OR_RETURN(int h, Half(x));
  ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(StatusTest, OkAndErrors) {
  EXPECT_TRUE(Status().ok());
  Status s = NotFound("no such domain vm9");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kNotFound);
  EXPECT_EQ(s.ToString(), "not-found: no such domain vm9");
  EXPECT_EQ(s.Annotate("checkpoint").message(),
            "checkpoint: no such domain vm9");
}

TEST(StatusTest, ResultPropagates) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  EXPECT_EQ(Quarter(6, &out).code(), Code::kInvalidArgument);
  Result<int> r = Status();  // OK is not a valid error: becomes internal
  EXPECT_EQ(r.status().code(), Code::kInternal);
}

TEST(StatusTest, FromErrno) {
  EXPECT_EQ(FromErrno(ENOSPC, "write").code(), Code::kNoSpace);
  EXPECT_EQ(FromErrno(EBUSY, "x").code(), Code::kBusy);
  EXPECT_EQ(FromErrno(EPIPE, "x").code(), Code::kIoError);
}

}  // namespace
}  // namespace ckptfs
