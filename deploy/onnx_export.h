// onnx_export.h: a trained model of the zoo as an ONNX file (issue #31, `kdlab export`).
//
// How: the model's forward pass runs once on an example batch in eval mode under a trace
// (engine/trace.h), with gradients on for the input only; every traced op whose inputs depend on
// the input becomes an ONNX node, and every tensor it reads that does not (weights, buffers,
// constants computed from them) becomes an initializer. Then:
//   - eval-mode BatchNormalization right after a convolution that feeds nothing else is folded
//     into it, as PyTorch's eval export does (../shared/METHODS.md, "Export and int8"):
//         s = gamma / sqrt(var + eps),  W' = W * s_c,  b' = (b - mean) s + beta
//     a BatchNormalization that cannot fold stays one (BatchNormalization-15);
//   - the batch dimension is dynamic ("batch"), the input is named "input" and the output
//     "logits"; the model's name, class count, input shape, modality and normalisation (mean and
//     standard deviation in [0, 1] pixel units) go into the model's metadata;
//   - the file is written with ONNX's own protobuf classes (Debian's libonnx-dev), opset 17,
//     IR version 8, atomically (a temporary file, then a rename).
// An op the exporter does not know (one the trace does not record, or one without an ONNX
// form here) is refused with its name; nothing is written then.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "nn/models/model.h"

namespace kd::deploy {

struct OnnxExportOptions {
  int64_t opset = 17;
  int64_t ir_version = 8;
  bool fold_batch_norm = true;
  std::map<std::string, std::string> metadata;  // added to the model's metadata_props
};

struct OnnxExportReport {
  int64_t nodes = 0;
  int64_t initializers = 0;
  int64_t folded_batch_norms = 0;
  std::map<std::string, int64_t> op_counts;  // ONNX op type -> nodes
  std::string str() const;                    // "31 nodes (Conv 19, Relu 19, ...), 21 BN folded"
};

// The serialised ONNX ModelProto of model.forward(example).logits; example is (B, C, H, W).
std::string onnx_model_bytes(nn::Classifier& model, const Tensor& example, const OnnxExportOptions& options,
                             OnnxExportReport* report = nullptr);
// The same, written to `path` atomically.
OnnxExportReport export_onnx(nn::Classifier& model, const Tensor& example, const std::string& path,
                             const OnnxExportOptions& options);

}  // namespace kd::deploy
