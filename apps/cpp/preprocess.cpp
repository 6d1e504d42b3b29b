#include "preprocess.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace edge_sam {
namespace {

// PyTorch's source coordinate for an output index (align_corners=False): scale * (i + 0.5) - 0.5,
// clamped at 0 for linear modes but not for cubic ones; scale = input / output in float.
float source_coordinate(int index, float scale, bool cubic) {
  const float real = scale * (static_cast<float>(index) + 0.5f) - 0.5f;
  return (!cubic && real < 0.f) ? 0.f : real;
}

struct LinearTap {
  int i0, i1;
  float w0, w1;
};

std::vector<LinearTap> linear_taps(int in_size, int out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  std::vector<LinearTap> taps(out_size);
  for (int o = 0; o < out_size; ++o) {
    const float real = source_coordinate(o, scale, false);
    const int i0 = std::min(static_cast<int>(std::floor(real)), in_size - 1);
    const float lambda = std::min(std::max(real - static_cast<float>(i0), 0.f), 1.f);
    taps[o] = {i0, i0 + (i0 < in_size - 1 ? 1 : 0), 1.f - lambda, lambda};
  }
  return taps;
}

constexpr float kCubicA = -0.75f;

struct CubicTap {
  std::array<int, 4> index;
  std::array<float, 4> weight;
};

std::vector<CubicTap> cubic_taps(int in_size, int out_size) {
  const float scale = static_cast<float>(in_size) / static_cast<float>(out_size);
  std::vector<CubicTap> taps(out_size);
  for (int o = 0; o < out_size; ++o) {
    const float real = source_coordinate(o, scale, true);
    const int base = std::min(static_cast<int>(std::floor(real)), in_size - 1);
    const float t = std::min(std::max(real - static_cast<float>(base), 0.f), 1.f);
    // Keys' cubic convolution, the coefficients of ATen's get_cubic_upsample_coefficients.
    const float x1 = t + 1.f, x2 = 1.f - t, x3 = 2.f - t;
    taps[o].weight = {((kCubicA * x1 - 5.f * kCubicA) * x1 + 8.f * kCubicA) * x1 - 4.f * kCubicA,
                      ((kCubicA + 2.f) * t - (kCubicA + 3.f)) * t * t + 1.f,
                      ((kCubicA + 2.f) * x2 - (kCubicA + 3.f)) * x2 * x2 + 1.f,
                      ((kCubicA * x3 - 5.f * kCubicA) * x3 + 8.f * kCubicA) * x3 - 4.f * kCubicA};
    for (int k = 0; k < 4; ++k) taps[o].index[k] = std::min(std::max(base - 1 + k, 0), in_size - 1);
  }
  return taps;
}

}  // namespace

std::vector<float> preprocess(const RgbImage& image, const Preprocessing& p) {
  const int s = p.size;
  const auto rows = linear_taps(image.height, s);
  const auto cols = linear_taps(image.width, s);
  std::vector<float> out(static_cast<size_t>(3) * s * s);
  auto value = [&](int y, int x, int c) {
    return static_cast<float>(image.pixels[(static_cast<size_t>(y) * image.width + x) * 3 + c]) / 255.f;
  };
  for (int c = 0; c < 3; ++c) {
    float* plane = out.data() + static_cast<size_t>(c) * s * s;
    for (int oy = 0; oy < s; ++oy) {
      const LinearTap& r = rows[oy];
      for (int ox = 0; ox < s; ++ox) {
        const LinearTap& q = cols[ox];
        const float top = q.w0 * value(r.i0, q.i0, c) + q.w1 * value(r.i0, q.i1, c);
        const float bottom = q.w0 * value(r.i1, q.i0, c) + q.w1 * value(r.i1, q.i1, c);
        plane[static_cast<size_t>(oy) * s + ox] = (r.w0 * top + r.w1 * bottom - p.mean[c]) / p.stddev[c];
      }
    }
  }
  return out;
}

void pad_prompts(const std::vector<Prompt>& prompts, int image_w, int image_h, int size, int slots,
                 std::vector<float>& coords, std::vector<float>& labels) {
  if (static_cast<int>(prompts.size()) > slots) {
    throw std::runtime_error(std::to_string(prompts.size()) + " prompt points given; the decoder takes at most " +
                             std::to_string(slots) + " (a box uses 2)");
  }
  const float sx = static_cast<float>(size) / static_cast<float>(image_w);
  const float sy = static_cast<float>(size) / static_cast<float>(image_h);
  coords.assign(static_cast<size_t>(slots) * 2, -1.f);
  labels.assign(slots, -1.f);
  for (size_t i = 0; i < prompts.size(); ++i) {
    coords[2 * i] = prompts[i].x >= 0.f ? prompts[i].x * sx : -1.f;
    coords[2 * i + 1] = prompts[i].y >= 0.f ? prompts[i].y * sy : -1.f;
    labels[i] = prompts[i].label;
  }
}

std::vector<float> upsample_bicubic(const float* logits, int h, int w, int out_h, int out_w) {
  const auto rows = cubic_taps(h, out_h);
  const auto cols = cubic_taps(w, out_w);
  std::vector<float> out(static_cast<size_t>(out_h) * out_w);
  for (int oy = 0; oy < out_h; ++oy) {
    const CubicTap& r = rows[oy];
    for (int ox = 0; ox < out_w; ++ox) {
      const CubicTap& q = cols[ox];
      float sum = 0.f;
      for (int j = 0; j < 4; ++j) {
        const float* row = logits + static_cast<size_t>(r.index[j]) * w;
        const float along_x = q.weight[0] * row[q.index[0]] + q.weight[1] * row[q.index[1]] +
                              q.weight[2] * row[q.index[2]] + q.weight[3] * row[q.index[3]];
        sum += r.weight[j] * along_x;
      }
      out[static_cast<size_t>(oy) * out_w + ox] = sum;
    }
  }
  return out;
}

}  // namespace edge_sam
