#include "image_io.h"

#include <cctype>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace edge_sam {
namespace {

// Next whitespace-separated header token, skipping '#' comments (the Netpbm header grammar).
std::string header_token(std::istream& in) {
  std::string token;
  int c;
  while ((c = in.get()) != EOF) {
    if (c == '#') {
      while ((c = in.get()) != EOF && c != '\n') {
      }
      continue;
    }
    if (std::isspace(c)) {
      if (!token.empty()) return token;
      continue;
    }
    token.push_back(static_cast<char>(c));
  }
  return token;
}

int header_int(std::istream& in, const std::string& path, const char* what) {
  const std::string token = header_token(in);
  try {
    size_t used = 0;
    const int value = std::stoi(token, &used);
    if (used == token.size() && value > 0) return value;
  } catch (const std::exception&) {
  }
  throw std::runtime_error(path + ": bad PPM header (" + what + " '" + token + "')");
}

}  // namespace

RgbImage read_ppm(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open image " + path);
  const std::string magic = header_token(in);
  if (magic != "P6") {
    throw std::runtime_error(path + " is not a binary RGB PPM (P6) file; convert it with: "
                             "python -m edge_sam.targets.executorch.native to-ppm IMAGE OUT.ppm");
  }
  RgbImage image;
  image.width = header_int(in, path, "width");
  image.height = header_int(in, path, "height");
  if (header_int(in, path, "maxval") != 255) throw std::runtime_error(path + ": only 8-bit PPM (maxval 255) is supported");
  // header_token consumed exactly one whitespace byte after maxval: the pixels start here.
  image.pixels.resize(static_cast<size_t>(image.width) * image.height * 3);
  in.read(reinterpret_cast<char*>(image.pixels.data()), static_cast<std::streamsize>(image.pixels.size()));
  if (in.gcount() != static_cast<std::streamsize>(image.pixels.size())) {
    throw std::runtime_error(path + " is truncated: expected " + std::to_string(image.pixels.size()) + " pixel bytes");
  }
  return image;
}

void write_pgm(const std::string& path, int width, int height, const std::vector<uint8_t>& pixels) {
  const std::string temp = path + ".partial";
  {
    std::ofstream out(temp, std::ios::binary);
    if (!out) throw std::runtime_error("cannot write " + path);
    out << "P5\n" << width << " " << height << "\n255\n";
    out.write(reinterpret_cast<const char*>(pixels.data()), static_cast<std::streamsize>(pixels.size()));
    if (!out) throw std::runtime_error("cannot write " + path);
  }
  if (std::rename(temp.c_str(), path.c_str()) != 0) {
    std::remove(temp.c_str());
    throw std::runtime_error("cannot move " + temp + " to " + path);
  }
}

}  // namespace edge_sam
