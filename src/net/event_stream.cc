#include "toolgate/net/event_stream.h"

namespace toolgate::net {

namespace {
constexpr std::string_view kBom("\xEF\xBB\xBF", 3);
}  // namespace

void EventStreamParser::Feed(std::string_view bytes) {
  if (failed_) return;
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
      if (Exceeds(bytes.size() - pos)) return;
      line_.append(bytes.substr(pos));
      return;
    }
    // The whole line counts whether it is buffered or read in place, so that failing does not
    // depend on how the stream was split.
    if (Exceeds(end - pos)) return;
    if (line_.empty()) {
      Line(bytes.substr(pos, end - pos));
    } else {
      line_.append(bytes.substr(pos, end - pos));
      std::string line = std::move(line_);
      line_.clear();
      Line(line);
    }
    if (failed_) return;
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
    if (Exceeds((has_data_ ? 1 : 0) + value.size())) return;
    if (has_data_) data_ += '\n';
    data_.append(value);
    has_data_ = true;
  } else if (field == "event") {
    if (value.size() > type_.size() && Exceeds(value.size() - type_.size())) return;
    type_ = std::string(value);
  } else if (field == "id") {
    if (value.find('\0') != std::string_view::npos) return;
    if (value.size() > last_event_id_.size() && Exceeds(value.size() - last_event_id_.size())) return;
    last_event_id_ = std::string(value);
  } else if (field == "retry") {
    if (!value.empty() && value.size() <= 12 && value.find_first_not_of("0123456789") == std::string_view::npos) {
      retry_ms_ = std::stoll(std::string(value));
    }
  }
}

void EventStreamParser::Dispatch() {
  if (dispatched_event_id_ != last_event_id_) {
    if (last_event_id_.size() > dispatched_event_id_.size() &&
        Exceeds(last_event_id_.size() - dispatched_event_id_.size())) {
      return;
    }
    dispatched_event_id_ = last_event_id_;
  }
  if (has_data_) {
    if (Exceeds(last_event_id_.size())) return;  // the event's own copy of the id
    ready_bytes_ += type_.size() + data_.size() + last_event_id_.size();
    ready_.push_back(Event{std::move(type_), std::move(data_), last_event_id_});
  }
  data_.clear();
  type_.clear();
  has_data_ = false;
}

std::optional<EventStreamParser::Event> EventStreamParser::Next() {
  if (ready_.empty()) return std::nullopt;
  Event e = std::move(ready_.front());
  ready_.pop_front();
  ready_bytes_ -= e.type.size() + e.data.size() + e.last_event_id.size();
  return e;
}

void EventStreamParser::Finish() {
  if (failed_) return;
  started_ = true;
  head_.clear();  // at most a BOM's first bytes
  if (!line_.empty()) {
    std::string line = std::move(line_);
    line_.clear();
    Line(line);
  }
  after_cr_ = false;
  if (!failed_) Dispatch();
}

bool EventStreamParser::Exceeds(size_t more) {
  if (failed_) return true;
  if (more <= max_bytes_ && held_bytes() <= max_bytes_ - more) return false;
  Fail();
  return true;
}

void EventStreamParser::Fail() {
  failed_ = true;
  started_ = true;
  head_.clear();
  after_cr_ = false;
  line_.clear();
  data_.clear();
  has_data_ = false;
  type_.clear();
  last_event_id_.clear();
  dispatched_event_id_.clear();
  ready_.clear();
  ready_bytes_ = 0;
}

}  // namespace toolgate::net
