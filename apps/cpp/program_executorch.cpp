// edge_sam::Program on the ExecuTorch C++ runtime: the `forward` method of one .pte.
#include <filesystem>
#include <stdexcept>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>
#include <executorch/runtime/platform/runtime.h>

#include "program.h"

namespace edge_sam {
namespace {

using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;

class PteProgram : public Program {
 public:
  explicit PteProgram(const std::string& path) : path_(path), module_(path, Module::LoadMode::Mmap) {
    if (!std::filesystem::is_regular_file(path)) throw std::runtime_error("program not found: " + path);
    const Error error = module_.load_method("forward");
    if (error != Error::Ok) {
      throw std::runtime_error("cannot load " + path + " (" + executorch::runtime::to_string(error) +
                               "): not an ExecuTorch program, or lowered to a backend this runner lacks "
                               "(a Core ML-delegated .pte runs on macOS/iOS only)");
    }
  }

  std::vector<int> input_shape(size_t index) override {
    auto meta = module_.method_meta("forward");
    if (!meta.ok()) throw std::runtime_error(path_ + ": cannot read its method metadata");
    auto info = meta->input_tensor_meta(index);
    if (!info.ok()) throw std::runtime_error(path_ + ": has no input " + std::to_string(index));
    return {info->sizes().begin(), info->sizes().end()};
  }

  std::vector<TensorData> run(const std::vector<TensorView>& inputs) override {
    // The tensors must outlive the EValues that refer to them.
    std::vector<executorch::extension::TensorPtr> tensors;
    std::vector<EValue> values;
    for (const TensorView& input : inputs) {
      tensors.push_back(executorch::extension::from_blob(
          input.data, std::vector<executorch::aten::SizesType>(input.shape.begin(), input.shape.end())));
      values.emplace_back(tensors.back());
    }
    auto result = module_.forward(values);
    if (!result.ok()) {
      throw std::runtime_error(path_ + " failed to run (" + executorch::runtime::to_string(result.error()) + ")");
    }
    std::vector<TensorData> outputs;
    for (const EValue& value : *result) {
      const auto& tensor = value.toTensor();
      outputs.push_back({std::vector<float>(tensor.const_data_ptr<float>(), tensor.const_data_ptr<float>() + tensor.numel()),
                         std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end())});
    }
    return outputs;
  }

 private:
  std::string path_;
  Module module_;
};

}  // namespace

const char* const kRuntimeName = "ExecuTorch";

void init_runtime() { executorch::runtime::runtime_init(); }

std::unique_ptr<Program> load_program(const std::string& path) { return std::make_unique<PteProgram>(path); }

}  // namespace edge_sam
