#include "manifest.h"

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace edge_sam {
namespace {

// Position just after `"key":` (first occurrence at or after `from`), or npos.
size_t value_start(const std::string& text, const std::string& key, size_t from = 0) {
  const size_t at = text.find("\"" + key + "\"", from);
  if (at == std::string::npos) return at;
  const size_t colon = text.find(':', at);
  return colon == std::string::npos ? colon : colon + 1;
}

// The text after `"key":`, where a nested field is searched (edge_sam writes each key once).
std::string after(const std::string& text, const std::string& key, const std::string& path) {
  const size_t start = value_start(text, key);
  if (start == std::string::npos) throw std::runtime_error(path + " has no \"" + key + "\"");
  return text.substr(start);
}

double number(const std::string& text, const std::string& key, const std::string& path) {
  const size_t start = value_start(text, key);
  if (start == std::string::npos) throw std::runtime_error(path + " has no \"" + key + "\"");
  return std::stod(text.substr(start));
}

std::vector<double> numbers(const std::string& text, const std::string& key, const std::string& path) {
  const size_t start = value_start(text, key);
  const size_t open = start == std::string::npos ? start : text.find('[', start);
  const size_t close = open == std::string::npos ? open : text.find(']', open);
  if (close == std::string::npos) throw std::runtime_error(path + " has no \"" + key + "\" list");
  std::vector<double> values;
  std::stringstream items(text.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(items, item, ',')) values.push_back(std::stod(item));
  return values;
}

std::string string_value(const std::string& text, const std::string& key, const std::string& path) {
  const size_t start = value_start(text, key);
  const size_t open = start == std::string::npos ? start : text.find('"', start);
  const size_t close = open == std::string::npos ? open : text.find('"', open + 1);
  if (close == std::string::npos) throw std::runtime_error(path + " has no \"" + key + "\" string");
  return text.substr(open + 1, close - open - 1);
}

}  // namespace

ArtifactContract read_manifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open manifest " + path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  ArtifactContract contract;
  try {
    const std::string prep = after(text, "preprocessing", path);
    const std::string resize = string_value(prep, "resize", path);
    if (resize.rfind("bilinear, align_corners=False", 0) != 0) {
      throw std::runtime_error(path + " asks for resize '" + resize + "', which this runner does not implement");
    }
    const std::vector<double> mean = numbers(prep, "mean", path), stddev = numbers(prep, "std", path);
    if (mean.size() != 3 || stddev.size() != 3) throw std::runtime_error(path + ": mean and std need 3 values each");
    for (int c = 0; c < 3; ++c) {
      contract.preprocessing.mean[c] = static_cast<float>(mean[c]);
      contract.preprocessing.stddev[c] = static_cast<float>(stddev[c]);
    }
    contract.preprocessing.size = static_cast<int>(number(text, "img_size", path));  // the top-level field comes first
    contract.slots = static_cast<int>(number(after(text, "prompts", path), "slots", path));
  } catch (const std::invalid_argument&) {
    throw std::runtime_error(path + " has a malformed number");
  }
  return contract;
}

}  // namespace edge_sam
