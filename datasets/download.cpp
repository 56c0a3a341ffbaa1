// download.cpp: the table of official data-set locations, and a resumable, verified download
// through libcurl (see download.h for what it guarantees).
//
// One file's download, fetch_file():
//   1. <file> already there: check its SHA-256; right -> done, wrong -> an error (we never wrote it).
//   2. Otherwise transfer into <file>.part. A .part left by an interrupted call is continued with
//      "Range: bytes=<its size>-": a 206 answer is appended, a 200 answer (a server that ignores
//      Range) replaces the .part from its first byte.
//   3. Check the .part: shorter than the published size -> the transfer ended early, keep it for
//      the next call; otherwise its SHA-256 must match, or it is deleted and the error names both
//      checksums. A match is renamed to <file>, so <file> only ever appears whole and verified.
#include "datasets/download.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <strings.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "datasets/sha256.h"
#include "engine/error.h"

namespace kd::data {
namespace fs = std::filesystem;

// ---------------------------------------------------------------- the table

const std::vector<RemoteDataset>& remote_datasets() {
  // The archives' official locations (the CIFAR page, https://www.cs.toronto.edu/~kriz/cifar.html,
  // and Fashion-MNIST's README, https://github.com/zalandoresearch/fashion-mnist). Sizes and
  // SHA-256 are those of TensorFlow Datasets' url_checksums (cifar10.txt, cifar100.txt,
  // fashion_mnist.txt). The publishers themselves list MD5s, which torchvision also carries (for
  // Fashion-MNIST; the CIFAR page for the binary archives), for anyone checking by hand:
  //   cifar-10-binary.tar.gz      c32a1d4ab5d03f1284b67883e8d87530
  //   cifar-100-binary.tar.gz     03b5dce01913d631647c71ecec9e9cb8
  //   train-images-idx3-ubyte.gz  8d4fb7e6c68d591d4c3dfef9ec88bf0d
  //   train-labels-idx1-ubyte.gz  25c81989df183df01b3e8a0aad5dffbe
  //   t10k-images-idx3-ubyte.gz   bef4ecab320f06d8554ea6380940ec79
  //   t10k-labels-idx1-ubyte.gz   bb300cfdad3c16e7a12a480ee83cd310
  // (Debian's dataset-fashion-mnist holds the same images re-compressed, so its .gz files have
  // other checksums.)
  static const std::vector<RemoteDataset> table = {
      {"cifar10",
       "https://www.cs.toronto.edu/~kriz/",
       "",
       {{"cifar-10-binary.tar.gz", 170052171, "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"}},
       false},
      {"cifar100",
       "https://www.cs.toronto.edu/~kriz/",
       "",
       {{"cifar-100-binary.tar.gz", 168513733, "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"}},
       false},
      {"fashion-mnist",
       "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
       "fashion-mnist",
       {{"train-images-idx3-ubyte.gz", 26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"},
        {"train-labels-idx1-ubyte.gz", 29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"},
        {"t10k-images-idx3-ubyte.gz", 4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"},
        {"t10k-labels-idx1-ubyte.gz", 5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"}},
       true},
  };
  return table;
}

const RemoteDataset& find_remote_dataset(const std::string& name) {
  std::vector<std::string> known;
  for (const RemoteDataset& d : remote_datasets()) {
    if (d.name == name) return d;
    known.push_back(d.name);
  }
  throw Error(
      fmt::format("no download is known for data set '{}': `kdlab data get` knows {}", name, fmt::join(known, ", ")));
}

std::string resolve_base_url(const RemoteDataset& dataset, const DownloadOptions& options) {
  std::string base = options.mirror;
  if (base.empty()) {
    const char* env = std::getenv("KDLAB_DATA_MIRROR");
    if (env != nullptr) base = env;
  }
  if (base.empty()) base = dataset.base_url;
  if (base.back() != '/') base += '/';
  return base;
}

// ---------------------------------------------------------------- progress on stderr

// "81.0 MiB", "29.5 KiB", "512 B"
static std::string human_bytes(int64_t bytes) {
  if (bytes >= (1 << 20)) return fmt::format("{:.1f} MiB", bytes / 1048576.0);
  if (bytes >= (1 << 10)) return fmt::format("{:.1f} KiB", bytes / 1024.0);
  return fmt::format("{} B", bytes);
}

// A bar redrawn in place (at most 10 times a second) when stderr is a terminal, otherwise a plain
// line at every tenth of the file (every 16 MiB when the size is unknown).
class DownloadProgress {
 public:
  DownloadProgress(std::string label, bool enabled)
      : label_(std::move(label)), enabled_(enabled), tty_(isatty(fileno(stderr)) != 0) {
    start_ = last_draw_ = std::chrono::steady_clock::now();
  }

  // have: bytes of the file on disk so far; total: its full size (0: unknown); received: bytes
  // received by this transfer (for the speed).
  void update(int64_t have, int64_t total, int64_t received) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - start_).count();
    double speed = elapsed > 0 ? received / elapsed : 0.0;  // bytes per second
    if (tty_) {
      // at most 10 times a second, and once more on reaching the end (libcurl keeps calling)
      bool at_end = total > 0 && have >= total;
      if (drawn_ && (at_end ? last_have_ == have : std::chrono::duration<double>(now - last_draw_).count() < 0.1))
        return;
      last_draw_ = now;
      last_have_ = have;
      drawn_ = true;
      if (total > 0) {
        const int width = 30;
        int filled = (int)(width * std::min(have, total) / total);
        double eta = speed > 0 ? (total - have) / speed : 0.0;
        fmt::print(stderr, "\r{} [{}{}] {} / {}  {}/s  ETA {:.0f}s   ", label_, std::string(filled, '#'),
                   std::string(width - filled, '.'), human_bytes(have), human_bytes(total), human_bytes((int64_t)speed),
                   eta);
      } else {
        fmt::print(stderr, "\r{} {}  {}/s   ", label_, human_bytes(have), human_bytes((int64_t)speed));
      }
    } else {
      // the step (tenth of the file, or 16 MiB) we are in; print once on entering a new one
      int64_t step = total > 0 ? 10 * std::min(have, total) / total : have / (16 << 20);
      if (step <= last_step_) return;
      last_step_ = step;
      if (total > 0)
        fmt::print(stderr, "{}: {}% ({} / {}, {}/s)\n", label_, step * 10, human_bytes(have), human_bytes(total),
                   human_bytes((int64_t)speed));
      else
        fmt::print(stderr, "{}: {} ({}/s)\n", label_, human_bytes(have), human_bytes((int64_t)speed));
    }
    std::fflush(stderr);
  }

  // Ends the bar's line.
  void finish() {
    if (enabled_ && tty_ && drawn_) fmt::print(stderr, "\n");
    drawn_ = false;
  }

 private:
  std::string label_;
  bool enabled_, tty_;
  bool drawn_ = false;
  int64_t last_have_ = -1;  // the bytes the bar showed last (terminal)
  int64_t last_step_ = 0;   // the last tenth (or 16 MiB) a line was printed for (no terminal)
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// ---------------------------------------------------------------- one HTTP transfer

// The state libcurl's callbacks share during one request.
struct Transfer {
  CURL* curl = nullptr;
  std::string url, part_path;
  int64_t offset = 0;         // bytes already in the .part, asked for with "Range: bytes=offset-"
  int64_t expected_size = 0;  // the published size (0: unknown), for the progress bar
  int fd = -1;                // the .part, opened when the body starts
  int64_t written_from = 0;   // where this body starts in the file: offset (206) or 0 (200)
  bool body_started = false;
  bool range_ignored = false;        // asked for a range, got the whole file (200)
  int64_t content_range_start = -1;  // N of the response's "Content-Range: bytes N-M/T"
  int64_t received = 0;              // body bytes of this transfer
  bool length_known = false;         // the response said how long its body is (Content-Length)
  std::string error;                 // why a callback stopped the transfer
  DownloadProgress* progress = nullptr;
};

static bool starts_with_nocase(const std::string& s, const char* prefix) {
  size_t n = std::strlen(prefix);
  return s.size() >= n && strncasecmp(s.c_str(), prefix, n) == 0;
}

// Each response header line. A redirect brings several responses; a status line starts a new one.
static size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = (Transfer*)user;
  std::string line(data, size * count);
  if (starts_with_nocase(line, "HTTP/")) {
    t->content_range_start = -1;
  } else if (starts_with_nocase(line, "content-range:")) {
    long long start = -1;
    if (std::sscanf(line.c_str() + std::strlen("content-range:"), " bytes %lld-", &start) == 1)
      t->content_range_start = start;
  }
  return size * count;
}

// The first bytes of the body: the status is known now, so decide whether they continue the .part
// (206) or replace it (200), and open it.
static bool start_body(Transfer* t) {
  long status = 0;
  curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
  bool append = false;
  if (t->offset > 0) {
    if (status == 206) {
      if (t->content_range_start != t->offset) {
        t->error = fmt::format(
            "the server answered the request for the bytes from {} of {} with bytes from {} (its Content-Range); "
            "delete {} and run again to download the whole file",
            t->offset, t->url, t->content_range_start, t->part_path);
        return false;
      }
      append = true;
    } else {
      t->range_ignored = true;  // the whole file again: start the .part over
    }
  }
  t->fd = ::open(t->part_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
  if (t->fd < 0) {
    t->error = fmt::format("cannot write '{}': {} (is its folder writable? choose another --dir)", t->part_path,
                           std::strerror(errno));
    return false;
  }
  t->written_from = append ? t->offset : 0;
  t->body_started = true;
  return true;
}

// Each piece of the body, appended to the .part as it arrives (so an interrupted download leaves
// a .part that is a prefix of the file, whatever stops it).
static size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = (Transfer*)user;
  size_t n = size * count;
  if (!t->body_started && !start_body(t)) return 0;  // anything but n stops the transfer
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::write(t->fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      t->error = fmt::format("cannot write '{}': {} (free some space, or choose another --dir)", t->part_path,
                             std::strerror(errno));
      return 0;
    }
    done += (size_t)w;
  }
  t->received += (int64_t)n;
  return n;
}

static int on_progress(void* user, curl_off_t dltotal, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* t = (Transfer*)user;
  if (t->progress != nullptr && t->body_started) {
    int64_t total = t->expected_size > 0 ? t->expected_size : (dltotal > 0 ? t->written_from + dltotal : 0);
    t->progress->update(t->written_from + dlnow, total, dlnow);
  }
  return 0;
}

static void init_curl_once() {
  static const CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
  KD_CHECK(rc == CURLE_OK, "cannot initialise libcurl: {}", curl_easy_strerror(rc));
}

static int64_t size_or_zero(const std::string& path) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  return ec ? 0 : (int64_t)size;
}

// What keeping the .part means, for the error messages.
static std::string kept_note(const std::string& part_path) {
  int64_t kept = size_or_zero(part_path);
  if (kept == 0) return "nothing was saved; check the network (or the proxy settings) and run again";
  return fmt::format("the {} received are kept in '{}': run the same command again to resume from there",
                     human_bytes(kept), part_path);
}

enum class TransferEnd { complete, range_not_satisfiable };

// One GET of t.url into t.part_path (a Range request when t.offset > 0). Returns when the server
// sent the whole response, or answered 416 to the Range; throws on every other failure, the
// .part keeping what arrived.
static TransferEnd run_transfer(Transfer& t, const DownloadOptions& options) {
  init_curl_once();
  t.curl = curl_easy_init();
  KD_CHECK(t.curl != nullptr, "cannot start a download of {}: curl_easy_init failed (out of memory?)", t.url);
  char curl_error[CURL_ERROR_SIZE] = {0};
  const std::string range = fmt::format("{}-", t.offset);
  const std::string user_agent = fmt::format("kdlab/{}", KDLAB_VERSION);
  curl_easy_setopt(t.curl, CURLOPT_URL, t.url.c_str());
  curl_easy_setopt(t.curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(t.curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(t.curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(t.curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(t.curl, CURLOPT_FAILONERROR, 1L);  // an HTTP status >= 400 is an error, its body unwritten
  curl_easy_setopt(t.curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(t.curl, CURLOPT_USERAGENT, user_agent.c_str());
  curl_easy_setopt(t.curl, CURLOPT_CONNECTTIMEOUT, options.connect_timeout_s);
  curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);                      // less than 1 byte/s ...
  curl_easy_setopt(t.curl, CURLOPT_LOW_SPEED_TIME, options.stall_timeout_s);  // ... for this long: give up
  curl_easy_setopt(t.curl, CURLOPT_ERRORBUFFER, curl_error);
  if (t.offset > 0) curl_easy_setopt(t.curl, CURLOPT_RANGE, range.c_str());
  curl_easy_setopt(t.curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(t.curl, CURLOPT_HEADERDATA, &t);
  curl_easy_setopt(t.curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(t.curl, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(t.curl, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(t.curl, CURLOPT_XFERINFOFUNCTION, on_progress);
  curl_easy_setopt(t.curl, CURLOPT_XFERINFODATA, &t);

  CURLcode rc = curl_easy_perform(t.curl);
  long status = 0;
  curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &status);
  curl_off_t content_length = -1;
  curl_easy_getinfo(t.curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &content_length);
  t.length_known = content_length >= 0;
  curl_easy_cleanup(t.curl);
  t.curl = nullptr;
  if (t.progress != nullptr) t.progress->finish();

  // Close the .part; on success make it durable before it is checked and renamed.
  if (t.fd >= 0) {
    bool synced = rc != CURLE_OK || ::fsync(t.fd) == 0;
    int sync_errno = errno;
    ::close(t.fd);
    t.fd = -1;
    KD_CHECK(synced, "cannot write '{}': fsync failed: {}", t.part_path, std::strerror(sync_errno));
  } else if (rc == CURLE_OK) {
    // An empty body: the file is empty (or, answering a Range, nothing was missing).
    int fd = ::open(t.part_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | (t.offset > 0 ? O_APPEND : O_TRUNC), 0644);
    KD_CHECK(fd >= 0, "cannot write '{}': {} (is its folder writable? choose another --dir)", t.part_path,
             std::strerror(errno));
    ::close(fd);
  }

  if (rc == CURLE_OK) return TransferEnd::complete;
  if (rc == CURLE_HTTP_RETURNED_ERROR) {
    if (status == 416 && t.offset > 0) return TransferEnd::range_not_satisfiable;
    std::string hint = status == 404 || status == 403
                           ? " (is the URL right? With a mirror, KDLAB_DATA_MIRROR or --mirror, check that it holds "
                             "this file)"
                           : " (try again later; with a mirror, KDLAB_DATA_MIRROR or --mirror, check it)";
    throw Error(fmt::format("download of {} failed: the server answered HTTP {}{}", t.url, status, hint));
  }
  if (!t.error.empty()) throw Error(fmt::format("download of {} stopped: {}", t.url, t.error));
  std::string why = curl_error[0] != '\0' ? std::string(curl_error) : std::string(curl_easy_strerror(rc));
  throw Error(
      fmt::format("download of {} stopped: {} (curl error {}); {}", t.url, why, (int)rc, kept_note(t.part_path)));
}

// ---------------------------------------------------------------- one file, verified

static bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

FetchResult fetch_file(const std::string& url, const std::string& path, const RemoteFile& expected,
                       const DownloadOptions& options) {
  KD_CHECK(is_sha256_hex(expected.sha256),
           "fetch_file: the expected sha256 of {} must be 64 lowercase hex digits, got '{}'", expected.name,
           expected.sha256);
  auto say = [&](const std::string& line) {
    if (options.verbose) fmt::print(stderr, "{}\n", line);
  };
  FetchResult result;
  result.path = path;

  // 1. Already there: it must be the published file.
  std::error_code ec;
  if (fs::exists(path, ec)) {
    std::string got = sha256_file(path);
    KD_CHECK(got == expected.sha256,
             "'{}' is already there but is not the published file: expected sha256 {}, got {}. Delete it (or move it "
             "away) and run again to download it from {}",
             path, expected.sha256, got, url);
    say(fmt::format("{}: already there, sha256 verified", path));
    result.outcome = FetchOutcome::already_present;
    return result;
  }
  fs::path folder = fs::path(path).parent_path();
  if (!folder.empty()) {
    fs::create_directories(folder, ec);
    KD_CHECK(!ec, "cannot create the folder '{}': {} (choose a writable --dir)", folder.string(), ec.message());
  }

  // 2. Transfer into the .part, continuing one left by an earlier call.
  const std::string part = path + ".part";
  bool length_unknown = false;  // the server sent no Content-Length: a closed connection looked like the end
  for (int attempt = 0;; ++attempt) {
    int64_t offset = size_or_zero(part);
    if (expected.size > 0 && offset > expected.size) {
      say(fmt::format("{} is larger than the published file ({} bytes): starting again", part, expected.size));
      fs::remove(part, ec);
      offset = 0;
    }
    if (expected.size > 0 && offset == expected.size) {  // everything arrived last time: just check it
      result.outcome = FetchOutcome::resumed;
      break;
    }
    const std::string size_text = expected.size > 0 ? human_bytes(expected.size) : std::string("size unknown");
    if (offset > 0)
      say(fmt::format("resuming {} from {} of {}", url, human_bytes(offset), size_text));
    else
      say(fmt::format("downloading {} ({})", url, size_text));

    DownloadProgress progress(expected.name.empty() ? fs::path(path).filename().string() : expected.name,
                              options.verbose);
    Transfer t;
    t.url = url;
    t.part_path = part;
    t.offset = offset;
    t.expected_size = expected.size;
    t.progress = &progress;
    TransferEnd end = run_transfer(t, options);
    if (end == TransferEnd::range_not_satisfiable) {
      // The server has nothing from `offset` on: the .part cannot be continued. Start over once.
      KD_CHECK(attempt == 0, "download of {} failed: the server refuses every byte range (HTTP 416)", url);
      say(fmt::format("the server cannot continue {} (HTTP 416): starting again", part));
      fs::remove(part, ec);
      continue;
    }
    length_unknown = !t.length_known;
    result.bytes_received += t.received;
    result.range_ignored = result.range_ignored || t.range_ignored;
    if (t.range_ignored)
      say(fmt::format("the server ignored the Range request and sent the whole file: {} started over", part));
    result.outcome = offset > 0 && !t.range_ignored ? FetchOutcome::resumed : FetchOutcome::downloaded;
    break;
  }

  // 3. Check the .part, then rename it into place. A server that announced its length and sent
  // it all has sent a whole file, right or wrong; without a length, a short .part may just be an
  // interrupted one.
  const int64_t have = size_or_zero(part);
  KD_CHECK(!length_unknown || expected.size <= 0 || have >= expected.size,
           "download of {} ended early: {} of {} bytes arrived; they are kept in '{}': run the same command again to "
           "resume from there",
           url, have, expected.size, part);
  const std::string got = sha256_file(part);
  if (got != expected.sha256) {
    fs::remove(part, ec);
    throw Error(fmt::format(
        "checksum mismatch for {} downloaded from {}: expected sha256 {}, got {} ({} bytes{}). The download was "
        "deleted, nothing was kept. Run the command again to retry; if it fails the same way, the server (or the "
        "mirror) sends a different file than the one published",
        path, url, expected.sha256, got, have,
        expected.size > 0 && have != expected.size ? fmt::format(", the published file has {}", expected.size)
                                                   : std::string()));
  }
  if (::rename(part.c_str(), path.c_str()) != 0)
    throw Error(fmt::format("cannot rename '{}' to '{}': {}", part, path, std::strerror(errno)));
  say(fmt::format("{}: sha256 verified ({})", path, got));
  return result;
}

// ---------------------------------------------------------------- a whole data set

DatasetDownload download_dataset(const RemoteDataset& dataset, const std::string& dir, const DownloadOptions& options) {
  KD_CHECK(!dir.empty(), "download_dataset: the download folder is empty; pass one (kdlab data get {} --dir DIR)",
           dataset.name);
  KD_CHECK(!dataset.files.empty() && (dataset.data_dir_is_folder || dataset.files.size() == 1),
           "download_dataset: data set '{}' must list its files, and exactly one when --data-dir names the file",
           dataset.name);
  const std::string base = resolve_base_url(dataset, options);
  const fs::path folder = dataset.subdir.empty() ? fs::path(dir) : fs::path(dir) / dataset.subdir;
  DatasetDownload out;
  for (const RemoteFile& file : dataset.files)
    out.files.push_back(fetch_file(base + file.name, (folder / file.name).string(), file, options));
  out.data_dir = dataset.data_dir_is_folder ? folder.string() : (folder / dataset.files[0].name).string();
  return out;
}

DatasetDownload download_dataset(const std::string& name, const std::string& dir, const DownloadOptions& options) {
  return download_dataset(find_remote_dataset(name), dir, options);
}

}  // namespace kd::data
