// Binary PPM (P6, RGB) in and PGM (P5, grey) out: the two image formats the runner speaks, so it
// needs no image library. Convert any image to PPM with
//   python -m edge_sam.targets.executorch.native to-ppm photo.jpg photo.ppm
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edge_sam {

struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // height * width * 3, row-major, RGB
};

// Reads a binary PPM with maxval 255; throws std::runtime_error naming the problem.
RgbImage read_ppm(const std::string& path);

// Writes a binary PGM (maxval 255) through a temp file renamed into place.
void write_pgm(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels);

}  // namespace edge_sam
