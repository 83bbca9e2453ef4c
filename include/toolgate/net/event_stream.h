#pragma once

// text/event-stream (server-sent events), parsed as the bytes arrive: the WHATWG HTML "event stream
// interpretation" without the EventSource object around it. Free of Asio and Beast.

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

namespace toolgate::net {

// Feed it the body of a `text/event-stream` response piece by piece, in order, and take the events
// it completed. Lines end with CRLF, LF or CR (a CRLF split across two pieces is one line end); a
// leading UTF-8 BOM is dropped; a line starting with ':' is a comment; `data` lines are joined with
// "\n"; `event` names the event's type; `id` (without NUL) sets the last event id, which later events
// carry; `retry` (ASCII digits only) sets the reconnection time; other fields are ignored. A blank
// line ends an event; an event without any `data` line is not dispatched (an `id` in it still
// counts). Not thread-safe.
//
// Memory is bounded by `max_bytes`: the current line (buffered or not), the unfinished event, the
// last event id and the events not taken yet — each counted with its own copy of the id, so a long
// `id` followed by many tiny events is no amplification — never hold more than that. A stream that
// would need more puts the parser in failed(): everything held is dropped, later input is ignored
// and no event comes out any more. Whether it fails does not depend on how the bytes were split
// into pieces, only on them and on when events are taken.
class EventStreamParser {
 public:
  static constexpr size_t kDefaultMaxBytes = 4 << 20;  // ClientRequest::max_response_bytes' default

  struct Event {
    std::string type;  // the `event` field; "" means the default type, "message"
    std::string data;
    std::string last_event_id;  // the last `id` seen up to and including this event
  };

  explicit EventStreamParser(size_t max_bytes = kDefaultMaxBytes) : max_bytes_(max_bytes) {}

  void Feed(std::string_view bytes);
  // The oldest completed event not taken yet, or nullopt (always nullopt once failed()).
  std::optional<Event> Next();
  // The stream ended: an event whose blank line never came is dispatched anyway when it has data.
  // (WHATWG discards it; MCP servers that end the body right after a final `data:` line lose nothing
  // this way, and a cut-off message simply fails to parse.)
  void Finish();

  const std::string& last_event_id() const { return last_event_id_; }
  // The last event id as of the last blank line (WHATWG's "last event ID string": what a
  // reconnection sends as Last-Event-ID) — unlike last_event_id(), never the id of an event still
  // being received.
  const std::string& dispatched_event_id() const { return dispatched_event_id_; }
  std::optional<int64_t> retry_ms() const { return retry_ms_; }
  // The stream needed more than max_bytes (see above).
  bool failed() const { return failed_; }
  size_t max_bytes() const { return max_bytes_; }
  // What it holds now (the bytes max_bytes bounds): never more than max_bytes.
  size_t held_bytes() const {
    return line_.size() + data_.size() + type_.size() + last_event_id_.size() + dispatched_event_id_.size() +
           ready_bytes_;
  }

 private:
  void Scan(std::string_view bytes);
  void Line(std::string_view line);
  void Dispatch();
  // Would holding `more` bytes beyond what is held now exceed max_bytes? Then fails.
  bool Exceeds(size_t more);
  void Fail();

  size_t max_bytes_;
  bool failed_ = false;
  size_t ready_bytes_ = 0;  // the sizes of the events in ready_

  bool started_ = false;   // the BOM check was made
  std::string head_;       // until then: the first bytes (a BOM's prefix)
  bool after_cr_ = false;  // the previous piece ended with CR: an LF starting this one is not a line
  std::string line_;       // the unfinished line
  std::string data_;
  bool has_data_ = false;
  std::string type_;
  std::string last_event_id_;
  std::string dispatched_event_id_;
  std::optional<int64_t> retry_ms_;
  std::deque<Event> ready_;
};

}  // namespace toolgate::net
