// The host side of a deploy-form artifact, written to match edge_sam's Python code number for
// number: image preprocessing (edge_sam.transforms.preprocess), prompt padding
// (edge_sam.deploy_form.pad_prompts) and mask upsampling (edge_sam.transforms.upscale_logits).
#pragma once

#include <array>
#include <vector>

#include "image_io.h"

namespace edge_sam {

struct Preprocessing {
  int size = 0;                      // square model input side
  std::array<float, 3> mean{};       // ImageNet constants, from the manifest
  std::array<float, 3> stddev{};
};

// uint8 RGB -> [1, 3, size, size] float: /255, bilinear resize (align_corners=False, no
// antialias, stretched to the square), then (x - mean) / std. Same arithmetic as
// torch.nn.functional.interpolate(mode="bilinear") on the CPU.
std::vector<float> preprocess(const RgbImage& image, const Preprocessing& p);

struct Prompt {
  float x, y, label;
};

// Image-pixel prompts -> `slots` decoder slots in model pixels: x * size / W, y * size / H
// (negative coordinates stay -1), padded with (-1, -1) and label -1. Throws if too many.
void pad_prompts(const std::vector<Prompt>& prompts, int image_w, int image_h, int size, int slots,
                 std::vector<float>& coords, std::vector<float>& labels);

// One low-res logit map [h, w] -> [out_h, out_w], bicubic (A = -0.75, align_corners=False,
// border-clamped taps): torch.nn.functional.interpolate(mode="bicubic") on the CPU.
std::vector<float> upsample_bicubic(const float* logits, int h, int w, int out_h, int out_w);

}  // namespace edge_sam
