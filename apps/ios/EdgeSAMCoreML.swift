// EdgeSAMCoreML.swift: tap-to-segment with an edge_sam Core ML artifact.
//
// An artifact folder from `edge-sam export --target coreml` holds encoder.mlpackage,
// context.mlpackage, decoder.mlpackage and manifest.json. Add the three packages to the app
// target (Xcode compiles them to .mlmodelc) and manifest.json as a resource, then:
//
//     let sam = try EdgeSAM(encoderURL: ..., contextURL: ..., decoderURL: ..., manifestURL: ...)
//     try sam.setImage(cgImage)                    // runs the encoder and the decoder's context once per image
//     let mask = try sam.mask(tap: CGPoint(x: 120, y: 300))  // runs the decoder per tap
//
// The preprocessing is the manifest's contract (the same numbers edge_sam's Python runners use):
// RGB in [0, 1], resized to img_size x img_size (stretched, no aspect padding), ImageNet
// mean/std, NCHW float32. Prompts go to 6 slots in model pixels; unused slots are (-1, -1) with
// label -1. The context program turns the image embedding into what the decoder needs from the
// image alone (computed once per image); the decoder takes it with the prompt and returns 3 low-res mask logits and their predicted IoU; the mask with the
// highest predicted IoU is resized to the image and thresholded at 0.
//
// Not built or run in edge_sam's CI (no macOS there); see README.md beside this file.

import CoreGraphics
import CoreML
import Foundation

/// The part of manifest.json this sample needs.
struct EdgeSAMManifest: Decodable {
    struct Preprocessing: Decodable {
        let in_graph: Bool
        let mean: [Float]
        let std: [Float]
    }
    struct Prompts: Decodable {
        let slots: Int
    }
    let target: String
    let img_size: Int
    let preprocessing: Preprocessing
    let prompts: Prompts
}

/// What the decoder needs from the image alone (the context program's outputs), kept per image.
struct ImageContext {
    let tokens: MLMultiArray
    let keys: MLMultiArray
    let values: MLMultiArray
    let queries: MLMultiArray
}

enum EdgeSAMError: Error {
    case wrongArtifact(String)
    case noImage
    case badOutput(String)
}

final class EdgeSAM {
    private let encoder: MLModel
    private let context: MLModel
    private let decoder: MLModel
    private let manifest: EdgeSAMManifest
    private let encoderInputIsImage: Bool
    /// The context program's outputs for the current image: the decoder's image inputs.
    private var imageContext: ImageContext?
    private var imageSize = CGSize.zero

    /// `encoderURL` / `contextURL` / `decoderURL` point at compiled models (.mlmodelc, what Xcode puts in the
    /// bundle) or at .mlpackage folders, which are compiled on the device first.
    init(encoderURL: URL, contextURL: URL, decoderURL: URL, manifestURL: URL, computeUnits: MLComputeUnits = .all) throws {
        manifest = try JSONDecoder().decode(EdgeSAMManifest.self, from: Data(contentsOf: manifestURL))
        guard manifest.target == "coreml" else {
            throw EdgeSAMError.wrongArtifact("manifest target is \(manifest.target), not coreml")
        }
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        encoder = try MLModel(contentsOf: EdgeSAM.compiled(encoderURL), configuration: configuration)
        context = try MLModel(contentsOf: EdgeSAM.compiled(contextURL), configuration: configuration)
        decoder = try MLModel(contentsOf: EdgeSAM.compiled(decoderURL), configuration: configuration)
        encoderInputIsImage = encoder.modelDescription.inputDescriptionsByName["image"]?.type == .image
    }

    private static func compiled(_ url: URL) throws -> URL {
        url.pathExtension == "mlpackage" ? try MLModel.compileModel(at: url) : url
    }

    // MARK: encoder

    /// Runs the encoder and the decoder's context once; every later tap reuses the context.
    func setImage(_ image: CGImage) throws {
        let side = manifest.img_size
        guard let rgba = EdgeSAM.resizedRGBA(image, side: side) else { throw EdgeSAMError.noImage }
        let input: MLFeatureProvider
        if encoderInputIsImage {
            // Exported with image_input=True: Core ML scales 0..255 by 1/255, mean/std are in the program.
            input = try MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(pixelBuffer: try EdgeSAM.pixelBuffer(rgba, side: side))])
        } else {
            input = try MLDictionaryFeatureProvider(dictionary: ["image": MLFeatureValue(multiArray: try normalized(rgba, side: side))])
        }
        let output = try encoder.prediction(from: input)
        guard let features = output.featureValue(for: "image_embeddings")?.multiArrayValue else {
            throw EdgeSAMError.badOutput("encoder returned no image_embeddings")
        }
        let contextOutput = try context.prediction(from: MLDictionaryFeatureProvider(
            dictionary: ["image_embeddings": MLFeatureValue(multiArray: features)]))
        guard let tokens = contextOutput.featureValue(for: "image_tokens")?.multiArrayValue,
              let keys = contextOutput.featureValue(for: "token_to_image_keys")?.multiArrayValue,
              let values = contextOutput.featureValue(for: "token_to_image_values")?.multiArrayValue,
              let queries = contextOutput.featureValue(for: "image_to_token_queries")?.multiArrayValue else {
            throw EdgeSAMError.badOutput("context returned no image_tokens / token_to_image_keys / values / queries")
        }
        imageContext = ImageContext(tokens: tokens, keys: keys, values: values, queries: queries)
        imageSize = CGSize(width: image.width, height: image.height)
    }

    /// The image drawn into an img_size x img_size RGBA8 buffer (stretched, bilinear-filtered).
    private static func resizedRGBA(_ image: CGImage, side: Int) -> [UInt8]? {
        var pixels = [UInt8](repeating: 0, count: side * side * 4)
        let drawn: Bool = pixels.withUnsafeMutableBytes { buffer in
            guard let context = CGContext(
                data: buffer.baseAddress, width: side, height: side, bitsPerComponent: 8, bytesPerRow: side * 4,
                space: CGColorSpaceCreateDeviceRGB(), bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue
            ) else { return false }
            context.interpolationQuality = .medium  // bilinear
            context.draw(image, in: CGRect(x: 0, y: 0, width: side, height: side))
            return true
        }
        return drawn ? pixels : nil
    }

    /// RGBA8 -> [1, 3, S, S] float32, (x / 255 - mean) / std per channel.
    private func normalized(_ rgba: [UInt8], side: Int) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: [1, 3, NSNumber(value: side), NSNumber(value: side)], dataType: .float32)
        let pointer = array.dataPointer.bindMemory(to: Float.self, capacity: 3 * side * side)
        let mean = manifest.preprocessing.mean, std = manifest.preprocessing.std
        for y in 0..<side {
            for x in 0..<side {
                let pixel = (y * side + x) * 4
                for c in 0..<3 {
                    pointer[c * side * side + y * side + x] = (Float(rgba[pixel + c]) / 255 - mean[c]) / std[c]
                }
            }
        }
        return array
    }

    private static func pixelBuffer(_ rgba: [UInt8], side: Int) throws -> CVPixelBuffer {
        var buffer: CVPixelBuffer?
        CVPixelBufferCreate(kCFAllocatorDefault, side, side, kCVPixelFormatType_32BGRA, nil, &buffer)
        guard let pixelBuffer = buffer else { throw EdgeSAMError.noImage }
        CVPixelBufferLockBaseAddress(pixelBuffer, [])
        defer { CVPixelBufferUnlockBaseAddress(pixelBuffer, []) }
        let rowBytes = CVPixelBufferGetBytesPerRow(pixelBuffer)
        let base = CVPixelBufferGetBaseAddress(pixelBuffer)!.assumingMemoryBound(to: UInt8.self)
        for y in 0..<side {
            for x in 0..<side {
                let source = (y * side + x) * 4, target = y * rowBytes + x * 4
                base[target] = rgba[source + 2]      // B
                base[target + 1] = rgba[source + 1]  // G
                base[target + 2] = rgba[source]      // R
                base[target + 3] = 255
            }
        }
        return pixelBuffer
    }

    // MARK: decoder

    /// The mask (image size, row-major, true = object) for one foreground tap in image pixels.
    func mask(tap: CGPoint) throws -> [Bool] {
        try mask(points: [tap], labels: [1])
    }

    /// Points in image pixels with labels 1 (foreground), 0 (background), 2/3 (box corners).
    func mask(points: [CGPoint], labels: [Float]) throws -> [Bool] {
        guard let imageContext else { throw EdgeSAMError.noImage }
        let slots = manifest.prompts.slots
        guard points.count == labels.count, points.count <= slots else {
            throw EdgeSAMError.wrongArtifact("give at most \(slots) prompt points, one label each")
        }
        let side = Float(manifest.img_size)
        let coords = try MLMultiArray(shape: [1, NSNumber(value: slots), 2], dataType: .float32)
        let slotLabels = try MLMultiArray(shape: [1, NSNumber(value: slots)], dataType: .float32)
        for slot in 0..<slots {
            let used = slot < points.count
            // image pixels -> model pixels: x and y scale separately (the image is stretched)
            coords[[0, slot, 0] as [NSNumber]] = NSNumber(value: used ? Float(points[slot].x) * side / Float(imageSize.width) : -1)
            coords[[0, slot, 1] as [NSNumber]] = NSNumber(value: used ? Float(points[slot].y) * side / Float(imageSize.height) : -1)
            slotLabels[[0, slot] as [NSNumber]] = NSNumber(value: used ? labels[slot] : -1)
        }
        let input = try MLDictionaryFeatureProvider(dictionary: [
            "image_tokens": MLFeatureValue(multiArray: imageContext.tokens),
            "token_to_image_keys": MLFeatureValue(multiArray: imageContext.keys),
            "token_to_image_values": MLFeatureValue(multiArray: imageContext.values),
            "image_to_token_queries": MLFeatureValue(multiArray: imageContext.queries),
            "point_coords": MLFeatureValue(multiArray: coords),
            "point_labels": MLFeatureValue(multiArray: slotLabels),
        ])
        let output = try decoder.prediction(from: input)
        guard let logits = output.featureValue(for: "low_res_masks")?.multiArrayValue,
              let iou = output.featureValue(for: "iou_predictions")?.multiArrayValue else {
            throw EdgeSAMError.badOutput("decoder returned no low_res_masks / iou_predictions")
        }
        var best = 0
        for k in 1..<iou.shape[1].intValue where iou[[0, k] as [NSNumber]].floatValue > iou[[0, best] as [NSNumber]].floatValue {
            best = k
        }
        return EdgeSAM.upsampleThreshold(logits, channel: best, to: imageSize)
    }

    /// Bilinear resize of one [h, w] logit map to the image (half-pixel centres), then > 0.
    /// (edge_sam's Python runners upsample bicubically; masks differ only along the boundary.)
    private static func upsampleThreshold(_ logits: MLMultiArray, channel: Int, to size: CGSize) -> [Bool] {
        let h = logits.shape[2].intValue, w = logits.shape[3].intValue
        let width = Int(size.width), height = Int(size.height)
        func value(_ y: Int, _ x: Int) -> Float {
            logits[[0, NSNumber(value: channel), NSNumber(value: min(max(y, 0), h - 1)), NSNumber(value: min(max(x, 0), w - 1))]].floatValue
        }
        var mask = [Bool](repeating: false, count: width * height)
        for y in 0..<height {
            let sy = (Float(y) + 0.5) * Float(h) / Float(height) - 0.5
            let y0 = Int(sy.rounded(.down)), fy = sy - Float(y0)
            for x in 0..<width {
                let sx = (Float(x) + 0.5) * Float(w) / Float(width) - 0.5
                let x0 = Int(sx.rounded(.down)), fx = sx - Float(x0)
                let top = value(y0, x0) * (1 - fx) + value(y0, x0 + 1) * fx
                let bottom = value(y0 + 1, x0) * (1 - fx) + value(y0 + 1, x0 + 1) * fx
                mask[y * width + x] = top * (1 - fy) + bottom * fy > 0
            }
        }
        return mask
    }
}
