// edge_sam_runner: EfficientSAM on a C++ runtime, from a deploy-form artifact: ExecuTorch .pte
// programs (edge_sam_runner) or AOTInductor .pt2 packages on libtorch (edge_sam_aoti_runner); the
// runtime is the Program implementation the binary is linked with (program.h).
//
//   edge_sam_runner --encoder encoder.pte --context context.pte --decoder decoder.pte --image photo.ppm \
//       --point 580,350 [--point X,Y[,LABEL] ...] [--box X0,Y0,X1,Y1] --out mask.pgm [--runs N] [--warmup W] \
//       [--dump DIR]
//
// Preprocesses the image the way the artifact's manifest.json says (read from beside the
// encoder, or --manifest), runs the three programs (the encoder and the decoder's per-image
// context once per image, the decoder per prompt), upsamples the mask with the highest predicted
// IoU to the image size, writes it as a PGM and prints encoder/context/decoder latency over N
// runs (after W untimed ones). --dump DIR also writes the raw outputs as float32 .npy files (embedding.npy,
// low_res.npy [1,3,h,w] logits, iou.npy [1,3]), so a host can compare them with its own runs.
// Errors are one line on stderr and exit status 2.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "image_io.h"
#include "manifest.h"
#include "preprocess.h"
#include "program.h"

namespace {

using Clock = std::chrono::steady_clock;

// RUNNER_NAME and PROGRAM_EXTENSION come from CMake: edge_sam_runner / .pte or edge_sam_aoti_runner / .pt2.
constexpr const char* kUsage =
    "usage: " RUNNER_NAME " --encoder ENCODER" PROGRAM_EXTENSION " --context CONTEXT" PROGRAM_EXTENSION
    " --decoder DECODER" PROGRAM_EXTENSION " --image IMAGE.ppm --point X,Y[,LABEL] "
    "[--point ...] [--box X0,Y0,X1,Y1] --out MASK.pgm [--runs N] [--warmup W] [--manifest manifest.json] [--dump DIR]";

struct Options {
  std::string encoder, context, decoder, image, out, manifest, dump;
  std::vector<edge_sam::Prompt> prompts;
  int runs = 1;
  int warmup = 0;
};

std::vector<float> parse_floats(const std::string& text, const char* flag) {
  std::vector<float> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    try {
      size_t used = 0;
      const std::string item = text.substr(start, comma - start);
      values.push_back(std::stof(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw std::runtime_error(std::string(flag) + " expects comma-separated numbers, got '" + text + "'");
    }
    start = comma + 1;
  }
  return values;
}

Options parse_args(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("%s\n", kUsage);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--encoder") {
      options.encoder = value;
    } else if (flag == "--context") {
      options.context = value;
    } else if (flag == "--decoder") {
      options.decoder = value;
    } else if (flag == "--image") {
      options.image = value;
    } else if (flag == "--out") {
      options.out = value;
    } else if (flag == "--manifest") {
      options.manifest = value;
    } else if (flag == "--dump") {
      options.dump = value;
    } else if (flag == "--runs") {
      options.runs = static_cast<int>(parse_floats(value, "--runs").at(0));
      if (options.runs < 1) throw std::runtime_error("--runs must be at least 1");
    } else if (flag == "--warmup") {
      options.warmup = static_cast<int>(parse_floats(value, "--warmup").at(0));
      if (options.warmup < 0) throw std::runtime_error("--warmup must be at least 0");
    } else if (flag == "--point") {
      const auto v = parse_floats(value, "--point");
      if (v.size() != 2 && v.size() != 3) throw std::runtime_error("--point expects X,Y or X,Y,LABEL");
      options.prompts.push_back({v[0], v[1], v.size() == 3 ? v[2] : 1.f});
    } else if (flag == "--box") {
      const auto v = parse_floats(value, "--box");
      if (v.size() != 4) throw std::runtime_error("--box expects X0,Y0,X1,Y1");
      options.prompts.push_back({v[0], v[1], 2.f});
      options.prompts.push_back({v[2], v[3], 3.f});
    } else {
      throw std::runtime_error("unknown option " + flag + " (see --help)");
    }
  }
  if (options.encoder.empty() || options.context.empty() || options.decoder.empty() || options.image.empty() ||
      options.out.empty()) {
    throw std::runtime_error("--encoder, --context, --decoder, --image and --out are required (see --help)");
  }
  if (options.prompts.empty()) throw std::runtime_error("give at least one --point or a --box");
  if (options.manifest.empty()) {
    options.manifest = (std::filesystem::path(options.encoder).parent_path() / "manifest.json").string();
  }
  return options;
}

void write_npy(const std::string& path, const std::vector<int>& shape, const std::vector<float>& values) {
  std::string dims;
  for (const int d : shape) dims += std::to_string(d) + ",";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  header.append(63 - (10 + header.size()) % 64, ' ');  // magic + version + length + header + '\n' -> 64-byte multiple
  header += '\n';
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) throw std::runtime_error("cannot write " + path);
  const uint16_t length = static_cast<uint16_t>(header.size());
  const unsigned char preamble[] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<unsigned char>(length & 0xff),
                                    static_cast<unsigned char>(length >> 8)};
  const bool ok = std::fwrite(preamble, 1, sizeof(preamble), file) == sizeof(preamble) &&
                  std::fwrite(header.data(), 1, header.size(), file) == header.size() &&
                  std::fwrite(values.data(), sizeof(float), values.size(), file) == values.size();
  if (std::fclose(file) != 0 || !ok) throw std::runtime_error("cannot write " + path);
}

double milliseconds_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

void print_latency(const char* name, const std::vector<double>& ms) {
  const double mean = std::accumulate(ms.begin(), ms.end(), 0.0) / static_cast<double>(ms.size());
  std::printf("%s: mean %.2f ms, min %.2f ms over %zu runs\n", name, mean, *std::min_element(ms.begin(), ms.end()),
              ms.size());
}

void expect_shape(const std::vector<int>& actual, const std::vector<int>& expected, const std::string& what) {
  if (actual != expected) {
    auto text = [](const std::vector<int>& s) {
      std::string out = "[";
      for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
      return out + "]";
    };
    throw std::runtime_error(what + " has shape " + text(actual) + " but the manifest implies " + text(expected));
  }
}

int run(const Options& options) {
  const edge_sam::ArtifactContract contract = edge_sam::read_manifest(options.manifest);
  const int size = contract.preprocessing.size;
  const edge_sam::RgbImage image = edge_sam::read_ppm(options.image);

  auto load_start = Clock::now();
  const std::unique_ptr<edge_sam::Program> encoder = edge_sam::load_program(options.encoder);
  const double encoder_load_ms = milliseconds_since(load_start);
  load_start = Clock::now();
  const std::unique_ptr<edge_sam::Program> context = edge_sam::load_program(options.context);
  const double context_load_ms = milliseconds_since(load_start);
  load_start = Clock::now();
  const std::unique_ptr<edge_sam::Program> decoder = edge_sam::load_program(options.decoder);
  const double decoder_load_ms = milliseconds_since(load_start);
  expect_shape(encoder->input_shape(0), {1, 3, size, size}, options.encoder + " input");
  const std::vector<int> embedding_shape = context->input_shape(0);
  // The decoder's inputs: the context program's outputs, then the prompt slots and their labels.
  constexpr size_t kContextTensors = 4;
  std::vector<std::vector<int>> context_shapes;
  for (size_t i = 0; i < kContextTensors; ++i) context_shapes.push_back(decoder->input_shape(i));
  expect_shape(decoder->input_shape(kContextTensors), {1, contract.slots, 2}, options.decoder + " point input");
  std::printf("%s: image %dx%d, model input %d, load: encoder %.1f ms, context %.1f ms, decoder %.1f ms\n",
              edge_sam::kRuntimeName, image.width, image.height, size, encoder_load_ms, context_load_ms, decoder_load_ms);

  std::vector<float> pixels = edge_sam::preprocess(image, contract.preprocessing);
  std::vector<float> coords, labels;
  edge_sam::pad_prompts(options.prompts, image.width, image.height, size, contract.slots, coords, labels);

  std::vector<double> encoder_ms, context_ms, decoder_ms;
  std::vector<float> embedding;
  const std::vector<edge_sam::TensorView> image_input = {{pixels.data(), {1, 3, size, size}}};
  for (int r = 0; r < options.warmup + options.runs; ++r) {
    const auto start = Clock::now();
    auto outputs = encoder->run(image_input);
    if (r >= options.warmup) encoder_ms.push_back(milliseconds_since(start));
    embedding = std::move(outputs.at(0).values);
  }
  if (static_cast<int64_t>(embedding.size()) !=
      std::accumulate(embedding_shape.begin(), embedding_shape.end(), int64_t{1}, std::multiplies<int64_t>())) {
    throw std::runtime_error("the encoder's output does not fit the context program's embedding input");
  }

  const std::vector<edge_sam::TensorView> embedding_input = {
      {embedding.data(), std::vector<int64_t>(embedding_shape.begin(), embedding_shape.end())}};
  std::vector<std::vector<float>> context_values(kContextTensors);
  for (int r = 0; r < options.warmup + options.runs; ++r) {
    const auto start = Clock::now();
    auto outputs = context->run(embedding_input);
    if (r >= options.warmup) context_ms.push_back(milliseconds_since(start));
    if (outputs.size() != kContextTensors) throw std::runtime_error(options.context + " does not return the 4 context tensors");
    for (size_t i = 0; i < kContextTensors; ++i) context_values[i] = std::move(outputs[i].values);
  }

  std::vector<float> low_res, iou;
  int mask_h = 0, mask_w = 0;
  std::vector<edge_sam::TensorView> inputs;
  for (size_t i = 0; i < kContextTensors; ++i) {
    const auto& shape = context_shapes[i];
    if (static_cast<int64_t>(context_values[i].size()) !=
        std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>())) {
      throw std::runtime_error("the context program's outputs do not fit the decoder's context inputs");
    }
    inputs.push_back({context_values[i].data(), std::vector<int64_t>(shape.begin(), shape.end())});
  }
  inputs.push_back({coords.data(), {1, contract.slots, 2}});
  inputs.push_back({labels.data(), {1, contract.slots}});
  for (int r = 0; r < options.warmup + options.runs; ++r) {
    const auto start = Clock::now();
    auto outputs = decoder->run(inputs);
    if (r >= options.warmup) decoder_ms.push_back(milliseconds_since(start));
    mask_h = static_cast<int>(outputs.at(0).shape.at(2));
    mask_w = static_cast<int>(outputs.at(0).shape.at(3));
    low_res = std::move(outputs.at(0).values);
    iou = std::move(outputs.at(1).values);
  }
  print_latency("encoder", encoder_ms);
  print_latency("context", context_ms);
  print_latency("decoder", decoder_ms);
  if (!options.dump.empty()) {
    const std::filesystem::path dump(options.dump);
    write_npy((dump / "embedding.npy").string(), embedding_shape, embedding);
    write_npy((dump / "low_res.npy").string(), {1, static_cast<int>(iou.size()), mask_h, mask_w}, low_res);
    write_npy((dump / "iou.npy").string(), {1, static_cast<int>(iou.size())}, iou);
  }

  const int best = static_cast<int>(std::max_element(iou.begin(), iou.end()) - iou.begin());
  const std::vector<float> full = edge_sam::upsample_bicubic(low_res.data() + static_cast<size_t>(best) * mask_h * mask_w,
                                                             mask_h, mask_w, image.height, image.width);
  std::vector<uint8_t> mask(full.size());
  std::transform(full.begin(), full.end(), mask.begin(), [](float v) { return static_cast<uint8_t>(v > 0.f ? 255 : 0); });
  edge_sam::write_pgm(options.out, image.width, image.height, mask);
  const long foreground = std::count(mask.begin(), mask.end(), 255);
  std::printf("mask %d of %zu (predicted IoU %.4f): %ld foreground pixels -> %s\n", best, iou.size(), iou[best],
              foreground, options.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  edge_sam::init_runtime();
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& error) {
    std::fprintf(stderr, RUNNER_NAME ": error: %s\n", error.what());
    return 2;
  }
}
