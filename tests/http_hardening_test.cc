// The HTTP layer under hostile conditions: the client's report of a local resource error.

#include <utility>  // before Asio (g++ 12 + Boost 1.74)

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>
#include <cerrno>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <future>
#include <optional>
#include <sstream>
#include <thread>

#include "fake_downstream.h"
#include "gateway_harness.h"
#include "gmock/gmock.h"

namespace toolgate {
namespace {

using json = nlohmann::json;
using testing::Body;
using testing::FakeDownstream;
using testing::GatewayProcess;
using testing::HeaderOf;
using testing::TempDir;
using testing::Token;
using Reply = FakeDownstream::Reply;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;  // the sanitizers' own memory and CPU make the process figures meaningless
#else
constexpr bool kSanitized = false;
#endif

// Lowers this process's soft descriptor limit for as long as it lives (children started meanwhile
// inherit it); the hard limit is left alone, so it can be restored.
class ScopedSoftDescriptorLimit {
 public:
  explicit ScopedSoftDescriptorLimit(rlim_t soft) {
    getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit lowered = saved_;
    lowered.rlim_cur = std::min(soft, saved_.rlim_max);
    setrlimit(RLIMIT_NOFILE, &lowered);
  }
  ~ScopedSoftDescriptorLimit() { setrlimit(RLIMIT_NOFILE, &saved_); }

 private:
  rlimit saved_{};
};

// ---- the client's local resource errors ------------------------------------------------------------

TEST(HttpClientTest, AConnectThatFailsForWantOfDescriptorsIsALocalResourceErrorAndSendsNothing) {
  namespace asio = boost::asio;
  asio::io_context io;
  {
    // The event loop's own descriptors (epoll, its interrupter and timer) are made on first use.
    asio::ip::tcp::socket warm(io);
    warm.open(asio::ip::tcp::v4());
    asio::steady_timer timer(io);
  }
  api::ClientRequest request;
  request.address = {"127.0.0.1", 1};
  request.timeout = seconds(2);
  std::future<api::ClientResult> f = asio::co_spawn(io, api::AsyncHttpCall(request), asio::use_future);
  {
    ScopedSoftDescriptorLimit none(0);  // no new descriptor for this process
    io.run();
  }
  const api::ClientResult r = f.get();
  EXPECT_FALSE(r.ok);
  EXPECT_TRUE(r.local_resource_error) << r.error;
  EXPECT_FALSE(r.connected);
  EXPECT_FALSE(r.sent);
  EXPECT_THAT(r.error, ::testing::HasSubstr("open files"));

  // A refused connection is the downstream's answer, not a local shortage.
  const api::ClientResult refused = api::HttpCall(request);
  EXPECT_FALSE(refused.ok);
  EXPECT_FALSE(refused.local_resource_error) << refused.error;
}

TEST(HttpClientTest, LocalResourceErrorsAreTheFourErrnosOfThisHost) {
  namespace errc = boost::system::errc;
  for (int e : {EMFILE, ENFILE, ENOBUFS, ENOMEM}) {
    EXPECT_TRUE(api::IsLocalResourceError(boost::system::error_code(e, boost::system::system_category()))) << e;
  }
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_descriptors));
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_buffer_space));
  EXPECT_TRUE(api::IsLocalResourceError(boost::asio::error::no_memory));
  for (int e : {ECONNREFUSED, ETIMEDOUT, ECONNRESET, EHOSTUNREACH, EADDRNOTAVAIL}) {
    EXPECT_FALSE(api::IsLocalResourceError(boost::system::error_code(e, boost::system::system_category()))) << e;
  }
  EXPECT_FALSE(api::IsLocalResourceError(boost::system::error_code()));
}

}  // namespace
}  // namespace toolgate
