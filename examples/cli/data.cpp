// kdlab data get NAME [--dir DIR] [--mirror URL]: download a data set's official archives (checked,
//   resumable; datasets/download.h) and print the --data-dir to train with.
// kdlab data pack --dataset D --data-dir DIR --split S --out FILE.bin
#include <fmt/format.h>

#include <chrono>

#include "datasets/dataset.h"
#include "datasets/download.h"
#include "examples/cli/cli.h"

namespace kd::cli {

static void register_data_get(CLI::App& data) {
  std::vector<std::string> names;
  for (const auto& d : data::remote_datasets()) names.push_back(d.name);
  auto* get = data.add_subcommand(
      "get", "Download a data set's official archives (checksum verified, resumed when interrupted) and print "
             "the --data-dir to use");
  struct Opts {
    std::string name, dir = "data", mirror;
  };
  auto o = std::make_shared<Opts>();
  get->add_option("name", o->name, "the data set to download")
      ->required()
      ->check(CLI::IsMember(names));
  get->add_option("--dir", o->dir, "folder to download into (created when missing)")->capture_default_str();
  get->add_option("--mirror", o->mirror,
                  "base URL to download from instead of the official one (default: $KDLAB_DATA_MIRROR when set)");
  get->callback([o] {
    data::DownloadOptions options;
    options.mirror = o->mirror;
    data::DatasetDownload got = data::download_dataset(o->name, o->dir, options);
    fmt::print("{} is ready; train with:\n  --dataset {} --data-dir {}\n", o->name, o->name, got.data_dir);
  });
}

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Data-set tools");
  data->require_subcommand(1);
  register_data_get(*data);
  auto* pack = data->add_subcommand("pack", "Decode a data set once and write it in the CIFAR binary format");
  struct Opts {
    std::string dataset = "imagefolder", data_dir, split = "train", out;
  };
  auto o = std::make_shared<Opts>();
  pack->add_option("--dataset", o->dataset, "data set name")->capture_default_str();
  pack->add_option("--data-dir", o->data_dir, "folder or .tar.gz of root/<class>/*.jpg (or root/<split>/<class>/)")
      ->required();
  pack->add_option("--split", o->split, "train or test")->capture_default_str();
  pack->add_option("--out", o->out, "output .bin (read back with --dataset cifar10 --data-dir FILE.bin)")->required();
  pack->callback([o] {
    auto t0 = std::chrono::steady_clock::now();
    data::Dataset ds = data::load_dataset(o->dataset, o->data_dir, o->split);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    data::pack_cifar_binary(ds, o->out);
    fmt::print("{} (decoded in {:.1f} s)\nwrote {} and {}.meta.txt\n", ds.summary(), secs, o->out, o->out);
  });
}

}  // namespace kd::cli
