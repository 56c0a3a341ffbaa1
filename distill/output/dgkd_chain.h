// dgkd_chain.h: DGKD's assistant chain (Son et al. 2021), a sequence of distillation runs.
//
// The assistants are trained in order, largest first, each by DGKD from every guide above it
// (the teacher and the assistants already trained), and then the student from all of them:
//   OUT/1_<A1>         guided by the teacher
//   OUT/2_<A2>         guided by the teacher and A1
//   ...
//   OUT/student_<S>    guided by the teacher and every assistant
// Each link is an ordinary run of the epoch loop with the dgkd distiller (run_distillation), in a
// run folder of its own, so that every assistant is a model of its own (weights, metrics,
// config.json) that can be evaluated, reused or guided from again. drop_num is capped at
// guides - 1 for the first links, where there are fewer guides to drop.
//
// Resume, link by link: a link whose model_last.safetensors exists is done and skipped; a link
// with a checkpoint resumes from it (bit for bit on one thread, as every epoch-loop run); the
// rest start afresh. Running the same chain again after a stop (Ctrl-C, a kill) finishes it.
#pragma once
#include <string>
#include <vector>

#include "train/recipe.h"
#include "train/regime.h"

namespace kd::distill {

struct DgkdChain {
  train::TrainConfig base;              // the recipe of every link: teacher, teacher_weights, data, epochs, method_params
  std::vector<std::string> assistants;  // model names, largest first
  std::string student;                  // the final student; empty: the assistants only
  std::string out_dir;
};

struct DgkdLink {
  std::string model, dir;             // the link's model and run folder
  std::vector<std::string> guides;    // the assistants guiding it, "model:weights" (the teacher aside)
};

// The links in training order, with their folders and guides.
std::vector<DgkdLink> dgkd_chain_links(const DgkdChain& chain);

// Trains the links that are not done yet, in order. Returns the last link's summary; its
// `interrupted` is set when a link stopped on Ctrl-C (the links after it are not started).
train::RunSummary run_dgkd_chain(const DgkdChain& chain, const std::string& command_line);

}  // namespace kd::distill
