// cli.cpp: the options several `kdlab` commands share (see cli.h), declared once.
#include "examples/cli/cli.h"

namespace kd::cli {

CLI::Option* add_data_options(CLI::App* cmd, CommonOptions& o) {
  CLI::Option* dataset =
      cmd->add_option("--dataset", o.dataset, "cifar10 | cifar100 | mnist | fashion-mnist | imagefolder | synthetic");
  cmd->add_option("--data-dir", o.data_dir, "folder, archive or file of the data set");
  return dataset;
}

void add_threads_option(CLI::App* cmd, int64_t& threads) {
  cmd->add_option("--threads", threads, "threads for the kernels (default: KDLAB_NUM_THREADS or the core count)");
}

void add_seed_option(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("--seed", o.seed, "seed of weights, shuffling and augmentation (default: the recipe's)");
}

void add_limit_options(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("--train-limit", o.train_limit,
                  "use only the first N training images (an image folder is sorted by class: --set "
                  "train_subset=N draws N at random)");
  cmd->add_option("--test-limit", o.test_limit, "evaluate on the first N test images");
}

void apply_common_options(const CommonOptions& o, train::TrainConfig& cfg) {
  if (!o.dataset.empty()) cfg.dataset = o.dataset;
  if (!o.data_dir.empty()) cfg.data_dir = o.data_dir;
  if (o.seed >= 0) cfg.seed = (uint64_t)o.seed;
  if (o.threads > 0) cfg.threads = o.threads;
  if (o.train_limit >= 0) cfg.train_limit = o.train_limit;
  if (o.test_limit >= 0) cfg.test_limit = o.test_limit;
  if (!o.schedule.empty()) cfg.schedule = o.schedule;
  if (o.epochs > 0) cfg.epochs = o.epochs;
  if (o.batch_size > 0) cfg.batch_size = o.batch_size;
  if (o.lr > 0) cfg.lr = o.lr;
  if (!o.peft.empty()) cfg.peft = o.peft;
  if (!o.init_weights.empty()) cfg.init_weights = o.init_weights;
  if (!o.train_only.empty()) cfg.train_only = o.train_only;
  if (!o.input.empty()) cfg.input = o.input;
  if (!o.teacher_input.empty()) cfg.teacher_input = o.teacher_input;
  if (!o.chroma_cue.empty()) cfg.chroma_cue = o.chroma_cue;
}

void add_modality_options(CLI::App* cmd, CommonOptions& o, bool distill) {
  const std::string kinds = std::string(" (") + data::modality_help() + ")";
  cmd->add_option(distill ? "--student-input,--input" : "--input", o.input,
                  std::string(distill ? "what the student sees" : "what the model sees") + kinds + "; default rgb");
  if (distill)
    cmd->add_option("--teacher-input", o.teacher_input,
                    "what the teacher sees" + kinds + "; default: the student's. A --teachers MODEL:WEIGHTS:MODALITY "
                    "sees its own");
  cmd->add_option("--chroma-cue", o.chroma_cue,
                  "P[:STRENGTH]: plant a class colour offset invisible in luminance into a fraction P of the images "
                  "(the modality-focusing control; STRENGTH in pixel levels, default 32)");
}

void add_peft_options(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("--peft", o.peft,
                  "parameter-efficient fine-tuning: lora:r=8,alpha=16,targets=attn.qkv+mlp.*[,parts=q+v,dropout=0.1] "
                  "or adapter:targets=* (the run saves peft.safetensors)");
  cmd->add_option("--init-weights", o.init_weights,
                  "start the model from these weights (non-strict: what does not load is reported), e.g. a PEFT base");
  cmd->add_option("--train-only", o.train_only, "peft (default with --peft), head (the classifier too), all");
}

void add_optimisation_options(CLI::App* cmd, CommonOptions& o) {
  cmd->add_option("--epochs", o.epochs, "epochs");
  cmd->add_option("--batch-size", o.batch_size, "batch size");
  cmd->add_option("--lr", o.lr, "base learning rate");
  cmd->add_option("--schedule", o.schedule, "constant | multistep | cosine | warmup | onecycle");
}

}  // namespace kd::cli
