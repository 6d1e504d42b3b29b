// edge_sam::Program on libtorch: one AOTInductor package (.pt2) through
// torch::inductor::AOTIModelPackageLoader. The package records its inputs in its own metadata
// (edge_sam.inputs, written by edge_sam.targets.aoti.compile), which is where input shapes come from.
#include <filesystem>
#include <stdexcept>

#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include "program.h"

namespace edge_sam {
namespace {

// The shapes in edge_sam.inputs: [["name", [d0, d1, ...], "dtype"], ...] (json.dumps of a fixed
// structure, so a bracket scanner is enough).
std::vector<std::vector<int>> shapes_of(const std::string& json) {
  std::vector<std::vector<int>> shapes;
  int depth = 0;
  bool in_string = false;
  std::string number;
  for (const char c : json) {
    if (c == '"') in_string = !in_string;
    if (in_string) continue;
    if (depth == 3 && (c == ',' || c == ']') && !number.empty()) {
      shapes.back().push_back(std::stoi(number));
      number.clear();
    }
    if (c == '[') {
      if (++depth == 3) shapes.emplace_back();
    } else if (c == ']') {
      --depth;
    } else if (depth == 3 && c >= '0' && c <= '9') {
      number += c;
    }
  }
  return shapes;
}

class Pt2Program : public Program {
 public:
  explicit Pt2Program(const std::string& path) : path_(path) {
    if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("program not found: " + path);
    try {
      loader_ = std::make_unique<torch::inductor::AOTIModelPackageLoader>(path);
    } catch (const std::exception& error) {
      throw std::runtime_error("cannot load " + path + ": not an AOTInductor package for this machine (" +
                               std::string(error.what()).substr(0, std::string(error.what()).find('\n')) + ")");
    }
    const auto metadata = loader_->get_metadata();
    const auto inputs = metadata.find("edge_sam.inputs");
    if (inputs == metadata.end()) throw std::runtime_error(path + ": its metadata has no edge_sam.inputs");
    input_shapes_ = shapes_of(inputs->second);
  }

  std::vector<int> input_shape(size_t index) override {
    if (index >= input_shapes_.size()) throw std::runtime_error(path_ + ": has no input " + std::to_string(index));
    return input_shapes_[index];
  }

  std::vector<TensorData> run(const std::vector<TensorView>& inputs) override {
    std::vector<at::Tensor> tensors;
    for (const TensorView& input : inputs) tensors.push_back(torch::from_blob(input.data, input.shape, torch::kFloat32));
    std::vector<at::Tensor> results;
    try {
      c10::InferenceMode inference;
      results = loader_->run(tensors);
    } catch (const std::exception& error) {
      throw std::runtime_error(path_ + " failed to run: " +
                               std::string(error.what()).substr(0, std::string(error.what()).find('\n')));
    }
    std::vector<TensorData> outputs;
    for (const at::Tensor& result : results) {
      const at::Tensor tensor = result.contiguous().to(torch::kFloat32);
      outputs.push_back({std::vector<float>(tensor.data_ptr<float>(), tensor.data_ptr<float>() + tensor.numel()),
                         tensor.sizes().vec()});
    }
    return outputs;
  }

 private:
  std::string path_;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> loader_;
  std::vector<std::vector<int>> input_shapes_;
};

}  // namespace

const char* const kRuntimeName = "AOTInductor (libtorch)";

void init_runtime() {}

std::unique_ptr<Program> load_program(const std::string& path) { return std::make_unique<Pt2Program>(path); }

}  // namespace edge_sam
