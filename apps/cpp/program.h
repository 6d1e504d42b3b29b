// One compiled graph of a deploy-form artifact (encoder or decoder) behind float buffers, so the
// runner (main.cpp) is the same for every runtime it is built against: ExecuTorch .pte programs
// (program_executorch.cpp) or AOTInductor .pt2 packages on libtorch (program_aoti.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace edge_sam {

struct TensorView {  // an input: borrowed float32 data and its shape
  float* data;
  std::vector<int64_t> shape;
};

struct TensorData {  // an output: float32 values and their shape
  std::vector<float> values;
  std::vector<int64_t> shape;
};

class Program {
 public:
  virtual ~Program() = default;
  // The shape of input `index` as the compiled graph records it.
  virtual std::vector<int> input_shape(size_t index) = 0;
  virtual std::vector<TensorData> run(const std::vector<TensorView>& inputs) = 0;
};

// The runtime this binary was built against: its name for messages, once-per-process setup, and
// a program loaded up front (throws std::runtime_error naming the file).
extern const char* const kRuntimeName;
void init_runtime();
std::unique_ptr<Program> load_program(const std::string& path);

}  // namespace edge_sam
