// Downloads (datasets/download.h) and SHA-256 (datasets/sha256.h), without the internet: the
// tests start a small HTTP/1.1 server on 127.0.0.1 (an ephemeral port, POSIX sockets, one
// thread) that serves files from memory, honours "Range: bytes=N-", and can drop a connection
// midway or ignore Range on request. They check a verified download, a corrupted file refused
// with both checksums named and nothing left behind, an interrupted download resumed with a Range
// request, a server that ignores Range, the errors, the table of official archives, and
// `kdlab data get` end to end on its error path.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "datasets/dataset.h"
#include "datasets/download.h"
#include "datasets/sha256.h"
#include "test_util.h"

using namespace kd;
using namespace kd::data;
namespace fs = std::filesystem;

#define CHECK_ERROR_CONTAINS(expr, text) \
  CHECK_THROWS_WITH_AS(expr, doctest::Contains(std::string(text).c_str()), ::kd::Error)

// ---------------------------------------------------------------- a test HTTP server

// One request per connection (every answer says "Connection: close"), handled in order on one
// thread. Test-only: GET of in-memory files, with just enough HTTP for libcurl.
class TestServer {
 public:
  struct Request {
    std::string path;   // "/archive.tar.gz"
    std::string range;  // the Range header's value ("bytes=100000-"), "" when absent
  };

  TestServer() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;  // the kernel picks a free port
    REQUIRE(::bind(listen_fd_, (sockaddr*)&addr, sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listen_fd_, (sockaddr*)&addr, &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~TestServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  void serve(const std::string& path, std::string body) {
    std::lock_guard<std::mutex> lock(mutex_);
    files_[path] = std::move(body);
  }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/"; }
  std::vector<Request> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }

  std::atomic<int64_t> drop_after{-1};    // the next answer stops after this many body bytes (once)
  std::atomic<bool> ignore_range{false};  // answer Range requests with the whole file (200)
  std::atomic<bool> no_length{false};     // send no Content-Length: the body ends when the connection does

 private:
  void loop() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      handle(fd);
      ::shutdown(fd, SHUT_WR);
      ::close(fd);
    }
  }

  static bool send_all(int fd, const char* data, size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, data, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      data += w;
      n -= (size_t)w;
    }
    return true;
  }

  void handle(int fd) {
    timeval timeout{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    // the request head, up to the blank line
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      ssize_t r = ::recv(fd, buf, sizeof buf, 0);
      if (r <= 0) return;
      head.append(buf, (size_t)r);
    }
    Request req;
    size_t sp1 = head.find(' '), sp2 = head.find(' ', sp1 + 1);
    req.path = head.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string lower = head;
    for (char& c : lower) c = (char)std::tolower((unsigned char)c);
    size_t r = lower.find("\r\nrange:");
    if (r != std::string::npos) {
      size_t start = r + std::strlen("\r\nrange:");
      size_t end = head.find("\r\n", start);
      req.range = head.substr(start, end - start);
      req.range.erase(0, req.range.find_first_not_of(' '));
    }
    std::string body;
    bool found;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(req);
      auto it = files_.find(req.path);
      found = it != files_.end();
      if (found) body = it->second;
    }

    std::string status = "200 OK", extra;
    size_t from = 0;
    if (!found) {
      status = "404 Not Found";
      body.clear();
    } else if (!req.range.empty() && !ignore_range) {
      from = std::stoull(req.range.substr(std::strlen("bytes=")));  // "bytes=N-"
      if (from >= body.size()) {
        status = "416 Range Not Satisfiable";
        extra = "Content-Range: bytes */" + std::to_string(body.size()) + "\r\n";
        body.clear();
        from = 0;
      } else {
        status = "206 Partial Content";
        extra = "Content-Range: bytes " + std::to_string(from) + "-" + std::to_string(body.size() - 1) + "/" +
                std::to_string(body.size()) + "\r\n";
      }
    }
    size_t length = body.size() - from;
    std::string length_header = no_length ? "" : "Content-Length: " + std::to_string(length) + "\r\n";
    std::string answer =
        "HTTP/1.1 " + status + "\r\n" + length_header + extra + "Accept-Ranges: bytes\r\nConnection: close\r\n\r\n";
    if (!send_all(fd, answer.data(), answer.size())) return;
    int64_t drop = drop_after.exchange(-1);
    size_t send_bytes = drop >= 0 ? std::min(length, (size_t)drop) : length;
    send_all(fd, body.data() + from, send_bytes);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::map<std::string, std::string> files_;
  std::vector<Request> requests_;
};

// ---------------------------------------------------------------- test files

// 300,000 bytes of a fixed pattern; its SHA-256 was computed independently (Python's hashlib).
static std::string archive_bytes() {
  std::string s(300000, '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = (char)((i * 131 + (i >> 9)) & 0xff);
  return s;
}
static const char* kArchiveSha256 = "1a384cc2083c9105a43920107924900c78425ea5b716fb239c5fd67d08747a4d";

static RemoteFile archive_entry() { return {"archive.tar.gz", 300000, kArchiveSha256}; }

static std::string fresh_dir(const std::string& name) {
  std::string d = kdtest::temp_path(name);
  fs::create_directories(d);
  return d;
}

static std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

static void write_text(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

static DownloadOptions quiet() {
  DownloadOptions o;
  o.verbose = false;
  o.connect_timeout_s = 5;
  o.stall_timeout_s = 10;
  return o;
}

// ---------------------------------------------------------------- SHA-256

TEST_CASE("SHA-256 matches the FIPS 180-2 test vectors") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmno"
                   "pqrstnopqrstu") == "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // one million 'a', fed in pieces of 997 bytes (not a multiple of the 64-byte block)
  Sha256 million;
  std::string piece(997, 'a');
  size_t left = 1000000;
  while (left > 0) {
    size_t n = std::min(left, piece.size());
    million.update(piece.data(), n);
    left -= n;
  }
  CHECK(million.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("SHA-256 in pieces equals SHA-256 in one go, at every split and around the padding boundary") {
  std::string message = archive_bytes().substr(0, 200);
  const std::string whole = sha256_hex(message);
  for (size_t split = 0; split <= message.size(); ++split) {
    Sha256 h;
    h.update(message.substr(0, split));
    h.update(message.substr(split));
    CHECK(h.hex_digest() == whole);
  }
  // lengths 55, 56, 63, 64, 65 put the length field in the same or the next block; they must all
  // differ from each other (a padding slip usually collapses two of them)
  std::set<std::string> digests;
  for (size_t n : {55, 56, 57, 63, 64, 65, 119, 120}) digests.insert(sha256_hex(std::string(n, 'x')));
  CHECK(digests.size() == 8);
  CHECK(sha256_hex(std::string(56, 'a')) == "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");

  std::string dir = fresh_dir("sha_file");
  write_text(dir + "/a.bin", archive_bytes());
  CHECK(sha256_file(dir + "/a.bin") == kArchiveSha256);
  CHECK_ERROR_CONTAINS(sha256_file(dir + "/missing.bin"), "missing.bin");
}

// ---------------------------------------------------------------- downloads

TEST_CASE("a download is verified, renamed into place, and not downloaded again") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  std::string dir = fresh_dir("dl_ok");
  std::string path = dir + "/sub/archive.tar.gz";  // the folder is created

  FetchResult r = fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::downloaded);
  CHECK(r.bytes_received == 300000);
  CHECK(r.path == path);
  CHECK(slurp(path) == archive_bytes());
  CHECK(sha256_file(path) == kArchiveSha256);
  CHECK_FALSE(fs::exists(path + ".part"));
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].path == "/archive.tar.gz");
  CHECK(server.requests()[0].range.empty());

  // a second call finds the verified file and asks the server nothing
  FetchResult again = fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet());
  CHECK(again.outcome == FetchOutcome::already_present);
  CHECK(again.bytes_received == 0);
  CHECK(server.requests().size() == 1);
}

TEST_CASE("a corrupted download is refused, naming both checksums, and leaves no file and no .part") {
  TestServer server;
  std::string corrupt = archive_bytes();
  corrupt[123456] ^= 0x01;  // one flipped bit
  server.serve("/archive.tar.gz", corrupt);
  std::string dir = fresh_dir("dl_corrupt");
  std::string path = dir + "/archive.tar.gz";

  const std::string got = sha256_hex(corrupt);
  REQUIRE(got != kArchiveSha256);
  try {
    fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet());
    FAIL("a corrupted download was accepted");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("checksum mismatch") != std::string::npos);
    CHECK(msg.find(std::string("expected sha256 ") + kArchiveSha256) != std::string::npos);
    CHECK(msg.find("got " + got) != std::string::npos);
  }
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".part"));
}

TEST_CASE("an interrupted download keeps its .part and the next call resumes it with a Range request") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  server.drop_after = 100000;  // the first answer stops a third of the way
  std::string dir = fresh_dir("dl_resume");
  std::string path = dir + "/archive.tar.gz";
  const std::string url = server.base_url() + "archive.tar.gz";

  try {
    fetch_file(url, path, archive_entry(), quiet());
    FAIL("an interrupted download reported success");
  } catch (const Error& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("download of " + url + " stopped") != std::string::npos);
    CHECK(msg.find(path + ".part") != std::string::npos);
    CHECK(msg.find("run the same command again to resume") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(path));
  REQUIRE(fs::exists(path + ".part"));
  CHECK(fs::file_size(path + ".part") == 100000);

  FetchResult r = fetch_file(url, path, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::resumed);
  CHECK(r.bytes_received == 200000);
  CHECK_FALSE(r.range_ignored);
  CHECK(slurp(path) == archive_bytes());
  CHECK_FALSE(fs::exists(path + ".part"));
  auto requests = server.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].range.empty());
  CHECK(requests[1].range == "bytes=100000-");
}

TEST_CASE("without a Content-Length, a connection closed early keeps the .part (short of the published size)") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  server.no_length = true;
  server.drop_after = 120000;
  std::string dir = fresh_dir("dl_nolength");
  std::string path = dir + "/archive.tar.gz";
  const std::string url = server.base_url() + "archive.tar.gz";
  CHECK_ERROR_CONTAINS(fetch_file(url, path, archive_entry(), quiet()), "ended early: 120000 of 300000 bytes arrived");
  CHECK_FALSE(fs::exists(path));
  CHECK(fs::file_size(path + ".part") == 120000);
  FetchResult r = fetch_file(url, path, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::resumed);
  CHECK(sha256_file(path) == kArchiveSha256);
  REQUIRE(server.requests().size() == 2);
  CHECK(server.requests()[1].range == "bytes=120000-");
}

TEST_CASE("a server that ignores Range sends the whole file, and the .part starts over") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  server.ignore_range = true;
  std::string dir = fresh_dir("dl_norange");
  std::string path = dir + "/archive.tar.gz";
  write_text(path + ".part", std::string(5000, 'z'));  // a .part whose bytes are not even the file's

  FetchResult r = fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::downloaded);
  CHECK(r.range_ignored);
  CHECK(r.bytes_received == 300000);
  CHECK(slurp(path) == archive_bytes());
  CHECK_FALSE(fs::exists(path + ".part"));
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].range == "bytes=5000-");
}

TEST_CASE("a .part that does not belong to the file fails the checksum after resuming, and is deleted") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  std::string dir = fresh_dir("dl_badpart");
  std::string path = dir + "/archive.tar.gz";
  write_text(path + ".part", std::string(5000, 'z'));
  CHECK_ERROR_CONTAINS(fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet()),
                       std::string("expected sha256 ") + kArchiveSha256);
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".part"));
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].range == "bytes=5000-");
}

TEST_CASE("a .part holding the whole file is checked without asking the server; a longer one starts over") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  std::string dir = fresh_dir("dl_fullpart");
  std::string path = dir + "/archive.tar.gz";
  write_text(path + ".part", archive_bytes());
  FetchResult r = fetch_file(server.base_url() + "archive.tar.gz", path, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::resumed);
  CHECK(r.bytes_received == 0);
  CHECK(server.requests().empty());
  CHECK(sha256_file(path) == kArchiveSha256);

  std::string path2 = dir + "/again.tar.gz";
  write_text(path2 + ".part", archive_bytes() + "extra");
  r = fetch_file(server.base_url() + "archive.tar.gz", path2, archive_entry(), quiet());
  CHECK(r.outcome == FetchOutcome::downloaded);
  CHECK(sha256_file(path2) == kArchiveSha256);
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].range.empty());
}

TEST_CASE("a .part at the end of a file of unknown size: the server's 416 starts the download over") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  std::string dir = fresh_dir("dl_416");
  std::string path = dir + "/archive.tar.gz";
  write_text(path + ".part", archive_bytes() + "extra");  // longer than the file: nothing to continue
  RemoteFile unknown_size = archive_entry();
  unknown_size.size = 0;
  FetchResult r = fetch_file(server.base_url() + "archive.tar.gz", path, unknown_size, quiet());
  CHECK(r.outcome == FetchOutcome::downloaded);
  CHECK(sha256_file(path) == kArchiveSha256);
  auto requests = server.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].range == "bytes=300005-");
  CHECK(requests[1].range.empty());
}

TEST_CASE("errors: an existing wrong file, HTTP 404, a refused connection, a bad expected checksum") {
  TestServer server;
  server.serve("/archive.tar.gz", archive_bytes());
  std::string dir = fresh_dir("dl_errors");

  // an existing file with the wrong bytes is left alone and refused, both checksums named
  std::string wrong = dir + "/archive.tar.gz";
  write_text(wrong, "not the archive");
  try {
    fetch_file(server.base_url() + "archive.tar.gz", wrong, archive_entry(), quiet());
    FAIL("a wrong existing file was accepted");
  } catch (const Error& e) {
    std::string msg = e.what();
    CHECK(msg.find("already there but is not the published file") != std::string::npos);
    CHECK(msg.find(kArchiveSha256) != std::string::npos);
    CHECK(msg.find(sha256_hex("not the archive")) != std::string::npos);
    CHECK(msg.find("Delete it") != std::string::npos);
  }
  CHECK(slurp(wrong) == "not the archive");
  CHECK(server.requests().empty());

  // a missing file on the server
  std::string path = dir + "/missing.tar.gz";
  CHECK_ERROR_CONTAINS(fetch_file(server.base_url() + "missing.tar.gz", path, archive_entry(), quiet()),
                       "the server answered HTTP 404");
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".part"));

  // nobody listening: a port that was free a moment ago
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(s, (sockaddr*)&addr, sizeof addr) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(s, (sockaddr*)&addr, &len);
  ::close(s);
  std::string closed = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "/archive.tar.gz";
  CHECK_ERROR_CONTAINS(fetch_file(closed, path, archive_entry(), quiet()), "nothing was saved");
  CHECK_FALSE(fs::exists(path));

  RemoteFile bad = archive_entry();
  bad.sha256 = "ABC";
  CHECK_ERROR_CONTAINS(fetch_file(server.base_url() + "archive.tar.gz", path, bad, quiet()),
                       "must be 64 lowercase hex digits");
}

TEST_CASE("download_dataset fetches every file from the mirror and returns the --data-dir") {
  TestServer server;
  std::string a = archive_bytes(), b = archive_bytes().substr(0, 1000);
  server.serve("/a.gz", a);
  server.serve("/b.gz", b);
  RemoteDataset folder_set{"toy",
                           "https://example.invalid/never/",
                           "toy",
                           {{"a.gz", 300000, sha256_hex(a)}, {"b.gz", 1000, sha256_hex(b)}},
                           true};
  std::string dir = fresh_dir("dl_dataset");
  DownloadOptions o = quiet();
  o.mirror = server.base_url();
  o.mirror.pop_back();  // without its trailing '/': resolve_base_url adds it
  DatasetDownload got = download_dataset(folder_set, dir, o);
  CHECK(got.data_dir == (fs::path(dir) / "toy").string());
  REQUIRE(got.files.size() == 2);
  CHECK(slurp(dir + "/toy/a.gz") == a);
  CHECK(slurp(dir + "/toy/b.gz") == b);
  auto requests = server.requests();
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].path == "/a.gz");
  CHECK(requests[1].path == "/b.gz");

  // one archive: --data-dir names the file itself; the mirror comes from KDLAB_DATA_MIRROR
  RemoteDataset file_set{"toy1", "https://example.invalid/never/", "", {{"b.gz", 1000, sha256_hex(b)}}, false};
  ::setenv("KDLAB_DATA_MIRROR", server.base_url().c_str(), 1);
  DatasetDownload one = download_dataset(file_set, dir + "/flat", quiet());
  ::unsetenv("KDLAB_DATA_MIRROR");
  CHECK(one.data_dir == (fs::path(dir) / "flat" / "b.gz").string());
  CHECK(slurp(one.data_dir) == b);
}

TEST_CASE("the table of official archives") {
  ::unsetenv("KDLAB_DATA_MIRROR");
  const auto& names = dataset_names();
  for (const RemoteDataset& d : remote_datasets()) {
    INFO(d.name);
    CHECK(std::find(names.begin(), names.end(), d.name) != names.end());  // load_dataset reads it
    CHECK(resolve_base_url(d, {}) == d.base_url);
    for (const RemoteFile& f : d.files) {
      CHECK(f.size > 0);
      CHECK(f.sha256.size() == 64);
      CHECK(f.sha256.find_first_not_of("0123456789abcdef") == std::string::npos);
    }
  }
  CHECK(find_remote_dataset("cifar10").base_url == "https://www.cs.toronto.edu/~kriz/");
  CHECK(find_remote_dataset("cifar10").files[0].name == "cifar-10-binary.tar.gz");
  CHECK(find_remote_dataset("cifar100").files[0].name == "cifar-100-binary.tar.gz");
  CHECK(find_remote_dataset("fashion-mnist").files.size() == 4);
  CHECK(find_remote_dataset("fashion-mnist").data_dir_is_folder);
  CHECK_ERROR_CONTAINS(find_remote_dataset("imagenet"), "knows cifar10, cifar100, fashion-mnist");
  DownloadOptions o;
  o.mirror = "http://127.0.0.1:1/x";
  CHECK(resolve_base_url(find_remote_dataset("cifar10"), o) == "http://127.0.0.1:1/x/");
}

#ifdef KDLAB_BIN
TEST_CASE("kdlab data get: a mirror serving the wrong bytes is refused with both checksums, exit status 1") {
  TestServer server;
  server.serve("/cifar-10-binary.tar.gz", "not CIFAR-10 at all");
  std::string dir = fresh_dir("dl_cli");
  std::string out = dir + "/out.txt", err = dir + "/err.txt";
  std::string cmd = std::string("\"") + KDLAB_BIN + "\" data get cifar10 --dir \"" + dir + "/data\" --mirror " +
                    server.base_url() + " >\"" + out + "\" 2>\"" + err + "\"";
  int rc = std::system(cmd.c_str());
  CHECK(WEXITSTATUS(rc) == 1);
  std::string msg = slurp(err);
  INFO(msg);
  CHECK(msg.find("checksum mismatch") != std::string::npos);
  CHECK(msg.find(find_remote_dataset("cifar10").files[0].sha256) != std::string::npos);
  CHECK(msg.find(sha256_hex("not CIFAR-10 at all")) != std::string::npos);
  CHECK_FALSE(fs::exists(dir + "/data/cifar-10-binary.tar.gz"));
  CHECK_FALSE(fs::exists(dir + "/data/cifar-10-binary.tar.gz.part"));
  REQUIRE(server.requests().size() == 1);
  CHECK(server.requests()[0].path == "/cifar-10-binary.tar.gz");
}
#endif
