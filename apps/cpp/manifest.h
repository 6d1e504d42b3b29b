// The few fields of an edge_sam manifest.json the native runner needs. edge_sam writes the file
// (json.dumps of a fixed dataclass), so a key scanner is enough: no JSON library.
#pragma once

#include <string>

#include "preprocess.h"

namespace edge_sam {

struct ArtifactContract {
  Preprocessing preprocessing;  // size = img_size, ImageNet mean/std
  int slots = 0;                // decoder prompt slots
};

// Reads img_size, preprocessing.mean/std/resize and prompts.slots; throws std::runtime_error if a
// field is missing or the resize is not the bilinear one this runner implements.
ArtifactContract read_manifest(const std::string& path);

}  // namespace edge_sam
