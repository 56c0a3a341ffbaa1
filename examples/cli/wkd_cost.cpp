// kdlab wkd-cost --teacher M --teacher-weights W --dataset D --data-dir DIR --out C.npy
//                [--source features|classifier] [--rows spatial|pooled] [--per-class N]
//
// Builds WKD-L's category cost matrix D (K x K, before sharpening) from a teacher and saves it
// as float32 .npy for `kdlab distill --method wkd_l --set cost_matrix=C.npy` and `kdlab loss`.
//   features     D_ij = 1 - linear CKA between the teacher's features of class i and class j
//                (the official generate_class_proto.py + generate_cost_matrix.py): the last
//                feature map of every training image, no augmentation, eval mode; with --rows
//                spatial (the official CIFAR choice) every spatial position is a row, with
//                --rows pooled one pooled vector per image.
//   classifier   D_ij = 1 - cos(w_i, w_j) between the rows of the teacher's last linear layer.
// The math is in distill/output/wkd_cost.h.
#include <fmt/format.h>

#include "distill/distill_run.h"
#include "distill/output/wkd_cost.h"
#include "train/progress.h"
#include "engine/autograd.h"
#include "engine/npy.h"
#include "engine/ops.h"
#include "examples/cli/cli.h"

namespace kd::cli {

void register_wkd_cost(CLI::App& app) {
  auto* cmd = app.add_subcommand("wkd-cost", "Build WKD-L's category cost matrix from a teacher");
  struct Opts {
    std::string teacher, weights, out, source = "features", rows = "spatial";
    int64_t per_class = 0, batch = 256;
    CommonOptions common;  // --dataset (the teacher's training set), --data-dir, --threads
  };
  auto o = std::make_shared<Opts>();
  cmd->add_option("--teacher", o->teacher, "teacher model name")->required();
  cmd->add_option("--teacher-weights", o->weights, "teacher weights (.safetensors)")->required();
  add_data_options(cmd, o->common);
  cmd->add_option("--out", o->out, "where to write D (K x K float32 .npy)")->required();
  cmd->add_option("--source", o->source, "features (linear CKA per class pair) | classifier (cosine of rows)")
      ->capture_default_str();
  cmd->add_option("--rows", o->rows, "spatial (every position of the last feature map a row) | pooled")
      ->capture_default_str();
  cmd->add_option("--per-class", o->per_class, "images per class (default: all, truncated to the smallest class)");
  cmd->add_option("--batch-size", o->batch, "batch size of the teacher's forward passes")->capture_default_str();
  add_threads_option(cmd, o->common.threads);
  cmd->callback([o] {
    train::set_threads(o->common.threads);
    KD_CHECK(o->source == "features" || o->source == "classifier",
             "--source must be features or classifier, got '{}'", o->source);
    KD_CHECK(o->rows == "spatial" || o->rows == "pooled", "--rows must be spatial or pooled, got '{}'", o->rows);
    KD_CHECK(!o->common.dataset.empty(), "kdlab wkd-cost needs --dataset (the data set the teacher was trained on)");
    data::Dataset train = data::load_dataset(o->common.dataset, o->common.data_dir, "train");
    const int64_t K = train.num_classes();
    distill::Guide teacher = distill::load_guide(o->teacher, o->weights, K, train);
    Tensor D;  // (K, K)
    if (o->source == "classifier") {
      D = distill::cost_matrix_cosine(distill::classifier_weight(*teacher.net, K));
    } else {
      // The images of each class, in data set order, up to per_class of them (the first ones).
      std::vector<int64_t> count(K, 0), keep;
      const int64_t* y = train.labels.data<int64_t>();
      for (int64_t i = 0; i < train.size(); ++i)
        if (o->per_class <= 0 || count[y[i]] < o->per_class) {
          ++count[y[i]];
          keep.push_back(i);
        }
      data::Dataset ds = data::subset(train, keep);
      KD_CHECK(o->batch > 0, "--batch-size must be positive, got {}", o->batch);
      std::vector<Tensor> rows, row_labels;
      train::Progress progress((ds.size() + o->batch - 1) / o->batch, "teacher features", 20);
      int64_t k = 0;
      train::for_each_eval_batch(*teacher.net, ds, o->batch, [&](const data::Batch& b) {
        nn::ModelOutput out = teacher.net->forward(b.images);
        if (o->rows == "pooled") {
          rows.push_back(out.pooled);  // (B, C)
          row_labels.push_back(b.labels);
        } else {
          auto [r, l] = distill::spatial_rows(out.feats.back(), b.labels);  // (B*H*W, C), (B*H*W)
          rows.push_back(r);
          row_labels.push_back(l);
        }
        progress.update(++k, -1, -1, 0);
      });
      progress.finish();
      Tensor feats = cat(rows, 0), labels = cat(row_labels, 0);  // (R, C), (R)
      Tensor class_feats = distill::stack_class_features(feats, labels, K);  // (K, n, C)
      fmt::print("linear CKA over {} classes x {} rows x {} features\n", K, class_feats.size(1), class_feats.size(2));
      D = distill::cost_matrix_cka(class_feats);
    }
    save_npy(o->out, D);
    fmt::print("cost matrix {} ({}) written to {}; mean off-diagonal {:.4f}\n", shape_str(D.shape()), o->source, o->out,
               sum(D).item() / (double)(K * (K - 1)));
  });
}

}  // namespace kd::cli
