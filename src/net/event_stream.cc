#include "toolgate/net/event_stream.h"

namespace toolgate::net {

namespace {
constexpr std::string_view kBom("\xEF\xBB\xBF", 3);
}  // namespace

void EventStreamParser::Feed(std::string_view bytes) {
  if (started_) {
    Scan(bytes);
    return;
  }
  head_.append(bytes);
  if (head_.size() < kBom.size() && kBom.substr(0, head_.size()) == head_) return;  // maybe a BOM, cut short
  started_ = true;
  std::string head = std::move(head_);
  head_.clear();
  std::string_view rest = head;
  if (rest.substr(0, kBom.size()) == kBom) rest.remove_prefix(kBom.size());
  Scan(rest);
}

void EventStreamParser::Scan(std::string_view bytes) {
  if (bytes.empty()) return;
  size_t pos = 0;
  if (after_cr_ && !bytes.empty() && bytes.front() == '\n') pos = 1;  // the LF of a split CRLF
  after_cr_ = false;
  while (pos < bytes.size()) {
    const size_t end = bytes.find_first_of("\r\n", pos);
    if (end == std::string_view::npos) {
      line_.append(bytes.substr(pos));
      return;
    }
    if (line_.empty()) {
      Line(bytes.substr(pos, end - pos));
    } else {
      line_.append(bytes.substr(pos, end - pos));
      std::string line = std::move(line_);
      line_.clear();
      Line(line);
    }
    pos = end + 1;
    if (bytes[end] == '\r') {
      if (pos == bytes.size()) {
        after_cr_ = true;
      } else if (bytes[pos] == '\n') {
        ++pos;
      }
    }
  }
}

void EventStreamParser::Line(std::string_view line) {
  if (line.empty()) {
    Dispatch();
    return;
  }
  if (line.front() == ':') return;  // a comment (servers send them to keep the connection alive)
  std::string_view field = line;
  std::string_view value;
  if (const size_t colon = line.find(':'); colon != std::string_view::npos) {
    field = line.substr(0, colon);
    value = line.substr(colon + 1);
    if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  }
  if (field == "data") {
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    type_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') == std::string_view::npos) last_event_id_ = std::string(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() <= 12 && value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ms_ = std::stoll(std::string(value));
    }
  }
}

void EventStreamParser::Dispatch() {
  if (has_data_) ready_.push_back(Event{std::move(type_), std::move(data_), last_event_id_});
  data_.clear();
  type_.clear();
  has_data_ = false;
}

std::optional<EventStreamParser::Event> EventStreamParser::Next() {
  if (ready_.empty()) return std::nullopt;
  Event e = std::move(ready_.front());
  ready_.pop_front();
  return e;
}

void EventStreamParser::Finish() {
  started_ = true;
  head_.clear();  // at most a BOM's first bytes
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    Line(line);
  }
  after_cr_ = false;
  Dispatch();
}

}  // namespace toolgate::net
