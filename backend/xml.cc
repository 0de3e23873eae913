#include "backend/xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include <mutex>

namespace ckptfs {
namespace {

void XmlInit() {
  static std::once_flag once;
  std::call_once(once, [] { xmlInitParser(); });
}

std::string ToStd(const xmlChar* s) {
  return s ? std::string(reinterpret_cast<const char*>(s)) : std::string();
}

const xmlChar* X(const std::string& s) {
  return reinterpret_cast<const xmlChar*>(s.c_str());
}

XmlElement FromNode(xmlNodePtr node) {
  XmlElement e;
  e.name = ToStd(node->name);
  xmlChar* content = xmlNodeGetContent(node);
  e.text = ToStd(content);
  xmlFree(content);
  for (xmlAttrPtr a = node->properties; a; a = a->next) {
    xmlChar* v = xmlNodeListGetString(node->doc, a->children, 1);
    e.attrs[ToStd(a->name)] = ToStd(v);
    xmlFree(v);
  }
  return e;
}

}  // namespace

void XmlDoc::Free::operator()(void* doc) const {
  xmlFreeDoc(static_cast<xmlDocPtr>(doc));
}

Result<XmlDoc> XmlDoc::Parse(std::string_view xml) {
  XmlInit();
  xmlDocPtr doc = xmlReadMemory(
      xml.data(), static_cast<int>(xml.size()), "noname.xml", nullptr,
      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (!doc) return InvalidArgument("malformed XML");
  XmlDoc d;
  d.doc_.reset(doc);
  return d;
}

Result<std::vector<XmlElement>> XmlDoc::Select(const std::string& xpath) const {
  auto* doc = static_cast<xmlDocPtr>(doc_.get());
  std::unique_ptr<xmlXPathContext, decltype(&xmlXPathFreeContext)> ctx(
      xmlXPathNewContext(doc), xmlXPathFreeContext);
  if (!ctx) return Internal("xmlXPathNewContext failed");
  xmlNodePtr root = xmlDocGetRootElement(doc);
  ctx->node = root;
  std::unique_ptr<xmlXPathObject, decltype(&xmlXPathFreeObject)> obj(
      xmlXPathEvalExpression(X(xpath), ctx.get()), xmlXPathFreeObject);
  if (!obj) return InvalidArgument("bad XPath: " + xpath);
  std::vector<XmlElement> out;
  if (obj->type == XPATH_NODESET && obj->nodesetval) {
    for (int i = 0; i < obj->nodesetval->nodeNr; ++i) {
      xmlNodePtr n = obj->nodesetval->nodeTab[i];
      if (n->type == XML_ELEMENT_NODE) out.push_back(FromNode(n));
    }
  }
  return out;
}

std::string XmlDoc::Text(const std::string& xpath, std::string fallback) const {
  auto r = Select(xpath);
  if (!r.ok() || r->empty()) return fallback;
  return r->front().text;
}

std::string XmlDoc::Attr(const std::string& xpath, const std::string& attr,
                         std::string fallback) const {
  auto r = Select(xpath);
  if (!r.ok() || r->empty()) return fallback;
  return r->front().Attr(attr, fallback);
}

XmlWriter::XmlWriter(const std::string& root) {
  XmlInit();
  auto* doc = xmlNewDoc(X("1.0"));
  xmlNodePtr r = xmlNewNode(nullptr, X(root));
  xmlDocSetRootElement(doc, r);
  doc_ = doc;
  stack_.push_back(r);
}

XmlWriter::~XmlWriter() { xmlFreeDoc(static_cast<xmlDocPtr>(doc_)); }

XmlWriter& XmlWriter::Open(
    const std::string& name,
    const std::vector<std::pair<std::string, std::string>>& attrs) {
  xmlNodePtr n = xmlNewChild(static_cast<xmlNodePtr>(stack_.back()), nullptr,
                             X(name), nullptr);
  for (const auto& [k, v] : attrs) xmlSetProp(n, X(k), X(v));
  stack_.push_back(n);
  return *this;
}

XmlWriter& XmlWriter::Leaf(
    const std::string& name,
    const std::vector<std::pair<std::string, std::string>>& attrs,
    const std::string& text) {
  Open(name, attrs);
  if (!text.empty()) {
    xmlNodeAddContent(static_cast<xmlNodePtr>(stack_.back()), X(text));
  }
  return Close();
}

XmlWriter& XmlWriter::Close() {
  if (stack_.size() > 1) stack_.pop_back();
  return *this;
}

XmlWriter& XmlWriter::RootAttr(const std::string& key,
                               const std::string& value) {
  xmlSetProp(static_cast<xmlNodePtr>(stack_.front()), X(key), X(value));
  return *this;
}

std::string XmlWriter::ToString() const {
  xmlChar* buf = nullptr;
  int len = 0;
  xmlDocDumpFormatMemory(static_cast<xmlDocPtr>(doc_), &buf, &len, 1);
  std::string s(reinterpret_cast<const char*>(buf), static_cast<size_t>(len));
  xmlFree(buf);
  return s;
}

}  // namespace ckptfs
