// text/event-stream as an MCP server's SSE answer reaches net::EventStreamParser: in pieces of any
// size. Input: byte 0 picks the parser's max_bytes, byte 1 how many split points follow, then one
// byte per piece (its length), then the stream. Beyond "no crash":
// - the events (type, data, last event id), the final last_event_id() and retry_ms() do not depend
//   on the pieces, and are those of a line-by-line reference written here from the WHATWG rules the
//   header promises (BOM dropped, CRLF/LF/CR, comments, data lines joined with "\n", id without NUL
//   and the dispatched id only at a blank line,
//   retry digits only, no dispatch without data, Finish dispatches a cut-short event);
// - held_bytes() never exceeds max_bytes; failed() is the same however the stream is split, comes
//   only when the reference needed that much, and always when it needed more than the limit;
// - taking events as they come (as the MCP client does) fails no more often and yields the same.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "toolgate/net/event_stream.h"

namespace {

using toolgate::net::EventStreamParser;
using Event = EventStreamParser::Event;

bool Same(const Event& a, const Event& b) {
  return a.type == b.type && a.data == b.data && a.last_event_id == b.last_event_id;
}

bool Same(const std::vector<Event>& a, const std::vector<Event>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!Same(a[i], b[i])) return false;
  }
  return true;
}

void Check(bool ok) {
  if (!ok) std::abort();
}

struct Run {
  std::vector<Event> events;
  bool failed = false;
  std::string last_event_id;
  std::string dispatched_event_id;
  std::optional<int64_t> retry_ms;
};

// Feeds `pieces` in order; takes the events after every piece (`drain`) or only at the end.
Run Parse(const std::vector<std::string_view>& pieces, size_t max_bytes, bool drain) {
  EventStreamParser p(max_bytes);
  Run run;
  auto take = [&] {
    while (std::optional<Event> e = p.Next()) run.events.push_back(std::move(*e));
  };
  for (std::string_view piece : pieces) {
    p.Feed(piece);
    Check(p.held_bytes() <= max_bytes);
    if (p.failed()) Check(p.held_bytes() == 0 && !p.Next().has_value());
    if (drain) take();
  }
  p.Finish();
  Check(p.held_bytes() <= max_bytes);
  take();
  run.failed = p.failed();
  if (run.failed) Check(run.events.empty() || drain);
  run.last_event_id = p.last_event_id();
  run.dispatched_event_id = p.dispatched_event_id();
  run.retry_ms = p.retry_ms();
  return run;
}

// The reference: the whole stream at once, line by line, without a size limit.
struct Reference {
  Run run;
  size_t max_line = 0;    // the longest line
  size_t max_event = 0;   // the largest event (type + data + id)
  size_t all_events = 0;  // all events together
};

Reference Interpret(std::string_view s) {
  Reference ref;
  if (s.substr(0, 3) == std::string_view("\xEF\xBB\xBF", 3)) s.remove_prefix(3);
  std::string data, type, id, dispatched_id;
  bool has_data = false;
  auto dispatch = [&] {
    dispatched_id = id;
    if (has_data) {
      const size_t size = type.size() + data.size() + id.size();
      ref.max_event = std::max(ref.max_event, size);
      ref.all_events += size;
      ref.run.events.push_back(Event{type, data, id});
    }
    data.clear();
    type.clear();
    has_data = false;
  };
  auto line = [&](std::string_view l) {
    ref.max_line = std::max(ref.max_line, l.size());
    if (l.empty()) return dispatch();
    if (l[0] == ':') return;
    std::string_view field = l, value;
    if (size_t colon = l.find(':'); colon != std::string_view::npos) {
      field = l.substr(0, colon);
      value = l.substr(colon + 1);
      if (!value.empty() && value[0] == ' ') value.remove_prefix(1);
    }
    if (field == "data") {
      if (has_data) data += '\n';
      data += value;
      has_data = true;
    } else if (field == "event") {
      type = std::string(value);
    } else if (field == "id") {
      if (value.find('\0') == std::string_view::npos) id = std::string(value);
    } else if (field == "retry") {
      bool digits = !value.empty() && value.size() <= 12;  // the parser's bound against overflow
      for (char c : value) digits = digits && c >= '0' && c <= '9';
      if (digits) ref.run.retry_ms = std::stoll(std::string(value));
    }
  };
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = pos;
    while (end < s.size() && s[end] != '\r' && s[end] != '\n') ++end;
    line(s.substr(pos, end - pos));
    if (end == s.size()) break;  // cut short: Finish takes it as a line
    pos = end + 1;
    if (s[end] == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
  }
  dispatch();  // Finish
  ref.run.last_event_id = id;
  ref.run.dispatched_event_id = dispatched_id;
  return ref;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  if (size < 2) return 0;
  const size_t max_bytes = bytes[0] == 255 ? size_t{1} << 20 : 8 + size_t{bytes[0]} * 8;
  const size_t splits = bytes[1] % 16;
  if (size < 2 + splits) return 0;
  const std::string_view stream(reinterpret_cast<const char*>(bytes) + 2 + splits, size - 2 - splits);
  std::vector<std::string_view> pieces;
  size_t at = 0;
  for (size_t i = 0; i < splits; ++i) {
    const size_t n = std::min<size_t>(bytes[2 + i], stream.size() - at);
    pieces.push_back(stream.substr(at, n));  // may be empty
    at += n;
  }
  pieces.push_back(stream.substr(at));

  const Run whole = Parse({stream}, max_bytes, false);
  const Run split = Parse(pieces, max_bytes, false);
  const Run drained = Parse(pieces, max_bytes, true);
  const Reference ref = Interpret(stream);

  // The pieces change nothing.
  Check(split.failed == whole.failed);
  if (!whole.failed) {
    Check(Same(whole.events, ref.run.events) && Same(split.events, ref.run.events));
    Check(whole.last_event_id == ref.run.last_event_id && split.last_event_id == ref.run.last_event_id);
    Check(whole.dispatched_event_id == ref.run.dispatched_event_id &&
          split.dispatched_event_id == ref.run.dispatched_event_id);
    Check(whole.retry_ms == ref.run.retry_ms && split.retry_ms == ref.run.retry_ms);
    // Every event was held at once before any was taken.
    Check(ref.all_events <= max_bytes && ref.max_line <= max_bytes);
    // Taking them as they come holds less.
    Check(!drained.failed && Same(drained.events, ref.run.events));
  } else {
    // It failed only for a reason: a line, the pending event's type, id and data, the dispatched id
    // and the events
    // waiting to be taken together exceeded the limit.
    Check(4 * ref.max_line + ref.max_event + ref.all_events > max_bytes);
  }
  if (!drained.failed) Check(Same(drained.events, ref.run.events));
  for (const Event& e : ref.run.events) {
    Check(e.data.find('\r') == std::string::npos && e.type.find_first_of("\r\n") == std::string::npos);
    Check(e.last_event_id.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos);
  }
  return 0;
}
