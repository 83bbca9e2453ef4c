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
// counts). Not thread-safe. Memory: the unfinished line and event plus the events not taken yet —
// bound the bytes fed (the response-size limit) to bound it.
class EventStreamParser {
 public:
  struct Event {
    std::string type;  // the `event` field; "" means the default type, "message"
    std::string data;
    std::string last_event_id;  // the last `id` seen up to and including this event
  };

  void Feed(std::string_view bytes);
  // The oldest completed event not taken yet, or nullopt.
  std::optional<Event> Next();
  // The stream ended: an event whose blank line never came is dispatched anyway when it has data.
  // (WHATWG discards it; MCP servers that end the body right after a final `data:` line lose nothing
  // this way, and a cut-off message simply fails to parse.)
  void Finish();

  const std::string& last_event_id() const { return last_event_id_; }
  std::optional<int64_t> retry_ms() const { return retry_ms_; }

 private:
  void Scan(std::string_view bytes);
  void Line(std::string_view line);
  void Dispatch();

  bool started_ = false;   // the BOM check was made
  std::string head_;       // until then: the first bytes (a BOM's prefix)
  bool after_cr_ = false;  // the previous piece ended with CR: an LF starting this one is not a line
  std::string line_;       // the unfinished line
  std::string data_;
  bool has_data_ = false;
  std::string type_;
  std::string last_event_id_;
  std::optional<int64_t> retry_ms_;
  std::deque<Event> ready_;
};

}  // namespace toolgate::net
