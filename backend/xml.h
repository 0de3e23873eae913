// Small libxml2 helpers: libvirt speaks XML, we read it with XPath and write
// it through libxml2 so escaping is never hand-rolled.
//
// Thread safety: an XmlDoc is used by one thread at a time; distinct documents
// may be used concurrently (libxml2 is initialised once, see XmlInit()).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

// An element selected by XPath: its attributes and text, plus the attributes
// and text of its direct children (enough for libvirt's flat records).
struct XmlElement {
  std::string name;
  std::string text;
  std::map<std::string, std::string> attrs;

  std::string Attr(const std::string& key, std::string fallback = "") const {
    auto it = attrs.find(key);
    return it == attrs.end() ? fallback : it->second;
  }
};

class XmlDoc {
 public:
  static Result<XmlDoc> Parse(std::string_view xml);

  // Elements matching an XPath expression (relative to the root when it does
  // not start with '/').
  Result<std::vector<XmlElement>> Select(const std::string& xpath) const;
  // Text of the first match, or fallback.
  std::string Text(const std::string& xpath, std::string fallback = "") const;
  // Attribute of the first match, or fallback.
  std::string Attr(const std::string& xpath, const std::string& attr,
                   std::string fallback = "") const;

 private:
  struct Free {
    void operator()(void* doc) const;
  };
  std::unique_ptr<void, Free> doc_;
};

// Builds a document element by element; each call appends under the element
// most recently opened by Open().
class XmlWriter {
 public:
  explicit XmlWriter(const std::string& root);
  ~XmlWriter();
  XmlWriter(const XmlWriter&) = delete;
  XmlWriter& operator=(const XmlWriter&) = delete;

  XmlWriter& Open(
      const std::string& name,
      const std::vector<std::pair<std::string, std::string>>& attrs = {});
  XmlWriter& Leaf(
      const std::string& name,
      const std::vector<std::pair<std::string, std::string>>& attrs = {},
      const std::string& text = "");
  XmlWriter& Close();
  XmlWriter& RootAttr(const std::string& key, const std::string& value);
  std::string ToString() const;

 private:
  void* doc_;
  std::vector<void*> stack_;
};

}  // namespace ckptfs
