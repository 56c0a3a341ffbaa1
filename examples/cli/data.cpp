// kdlab data pack --dataset D --data-dir DIR --split S --out FILE.bin
#include <fmt/format.h>

#include <chrono>

#include "datasets/dataset.h"
#include "examples/cli/cli.h"

namespace kd::cli {

void register_data(CLI::App& app) {
  auto* data = app.add_subcommand("data", "Data-set tools");
  data->require_subcommand(1);
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
