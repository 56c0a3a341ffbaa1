// download.h: fetching the official data-set archives (`kdlab data get`).
//
// A user with internet should not hunt for archives: download_dataset("cifar10", "data") fetches
// https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz into data/, checks its SHA-256 and
// returns the --data-dir to train with ("data/cifar-10-binary.tar.gz"). The table of official
// locations, sizes and checksums is remote_datasets() (download.cpp says where each value comes
// from).
//
// What a download guarantees (tests/test_download.cpp checks each with a local HTTP server):
//   - the final file appears only by rename after its checksum matched; until then the bytes live
//     in <file>.part, so an interrupted or failed download never leaves a half-written <file>;
//   - an interrupted download resumes: the next call asks for the rest with an HTTP Range request
//     (a server that ignores Range sends the whole file again, and the .part starts over);
//   - a checksum mismatch is refused with both checksums named, and the .part is deleted;
//   - a file already present and verified is not downloaded again.
// Transfers go through libcurl (https, redirects, proxies from the usual environment variables).
//
// Mirrors and tests: a base URL replaces the official one (DownloadOptions::mirror, or the
// environment variable KDLAB_DATA_MIRROR); each file is then fetched from <mirror>/<file name>.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace kd::data {

// One file of a data set, as published.
struct RemoteFile {
  std::string name;    // the file's name at the base URL, and on disk
  int64_t size = 0;    // its size in bytes (the progress bar, an early check); 0 when unknown
  std::string sha256;  // its SHA-256, 64 lowercase hex characters
};

// Where a data set is published and how kdlab reads it once downloaded.
struct RemoteDataset {
  std::string name;      // the name load_dataset knows it by: "cifar10", "fashion-mnist"
  std::string base_url;  // the official location; a file's URL is base_url + name
  std::string subdir;    // the folder under the download folder that receives the files ("" = itself)
  std::vector<RemoteFile> files;
  // What --data-dir names afterwards: the folder holding the files (true, e.g. the four IDX files
  // of Fashion-MNIST) or the one file itself (false, e.g. the CIFAR .tar.gz).
  bool data_dir_is_folder = false;
};

// The data sets `kdlab data get` knows, with their official locations and checksums.
const std::vector<RemoteDataset>& remote_datasets();
// The entry for `name`; an unknown name is an error listing the known ones.
const RemoteDataset& find_remote_dataset(const std::string& name);

struct DownloadOptions {
  // A base URL to fetch the files from instead of the official one (a mirror, or a test server);
  // "" means the environment variable KDLAB_DATA_MIRROR when it is set, else the official URL.
  std::string mirror;
  // Progress on stderr: a bar redrawn in place on a terminal, a line every 10% otherwise; plus a
  // line per file saying what happened. false: silent (the tests).
  bool verbose = true;
  long connect_timeout_s = 30;  // give up connecting after this long
  long stall_timeout_s = 60;    // give up when no byte has arrived for this long (.part kept)
};

// What fetch_file did.
enum class FetchOutcome {
  already_present,  // the file was there with the right checksum: nothing downloaded
  downloaded,       // downloaded from the first byte
  resumed,          // completed a .part left by an earlier, interrupted call
};

struct FetchResult {
  std::string path;  // the verified file
  FetchOutcome outcome = FetchOutcome::downloaded;
  int64_t bytes_received = 0;  // body bytes transferred by this call
  bool range_ignored = false;  // the server answered a Range request with the whole file
};

// Downloads `url` into `path` and verifies it against `expected` (its sha256, and its size when
// known), as the guarantees at the top of this file describe. Creates the parent folder. Throws
// kd::Error saying what went wrong and what to do: an unreachable or refusing server (the HTTP
// status), an interrupted transfer (how much is kept in the .part, and to run again to resume),
// a checksum mismatch (expected and got), an existing `path` with the wrong checksum (which it
// leaves alone: delete it to download again), an unwritable folder.
FetchResult fetch_file(const std::string& url, const std::string& path, const RemoteFile& expected,
                       const DownloadOptions& options = {});

// The base URL the files of `dataset` are fetched from under `options` (mirror, environment,
// official), ending in '/'.
std::string resolve_base_url(const RemoteDataset& dataset, const DownloadOptions& options);

struct DatasetDownload {
  std::string data_dir;  // what to pass as --data-dir: "data/cifar-10-binary.tar.gz", "data/fashion-mnist"
  std::vector<FetchResult> files;
};

// Fetches every file of `dataset` into `dir` (its subdir under it) and returns the --data-dir.
DatasetDownload download_dataset(const RemoteDataset& dataset, const std::string& dir,
                                 const DownloadOptions& options = {});
// The same for a data set of remote_datasets() by name.
DatasetDownload download_dataset(const std::string& name, const std::string& dir, const DownloadOptions& options = {});

}  // namespace kd::data
