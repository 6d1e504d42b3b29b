"""Dataset readers, the synthetic generator and prompt sampling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_sam.data import CocoDataset, DatasetError, SA1BDataset, generate_synthetic, open_dataset, write_coco
from edge_sam.data.codec import bbox_xyxy_from_mask
from edge_sam.data.prompts import (
    center_correction_click,
    distance_to_boundary,
    mask_center_point,
    sample_background_point,
    sample_box,
    sample_point_in_mask,
)
from edge_sam.data.synthetic import (
    MAX_OBJECTS,
    MIN_OBJECTS,
    MIN_VISIBLE_PIXELS,
    load_photos,
    render_synthetic_sample,
)
from edge_sam.eval.metrics import mask_iou

IMG = 128
SEED = 7


@pytest.fixture(scope="module")
def photos():
    return load_photos()


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_synthetic(root, {"train": 2, "val": 6}, img_size=IMG, seed=SEED, progress=False)
    return root


# --------------------------------------------------------------------------- readers


def test_sa1b_reader_returns_the_masks_the_generator_drew(synth_root, photos):
    dataset = open_dataset(synth_root / "val")
    assert isinstance(dataset, SA1BDataset) and len(dataset) == 6
    for index in range(len(dataset)):
        read = dataset[index]
        drawn = render_synthetic_sample(SEED, "val", index, IMG, photos)
        assert read.image.shape == (IMG, IMG, 3) and read.image.dtype == np.uint8
        # JPEG is lossy; the pixels must still be the drawn ones up to compression noise.
        mse = np.mean((read.image.astype(float) - drawn.image.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 30.0
        assert len(read.annotations) == len(drawn.annotations)
        for got, want in zip(read.annotations, drawn.annotations):
            assert got.mask.dtype == bool and np.array_equal(got.mask, want.mask)
            assert np.array_equal(got.bbox_xyxy, bbox_xyxy_from_mask(want.mask))
            assert got.area == int(want.mask.sum())
            assert np.array_equal(got.point_coords, want.point_coords)
            x, y = got.point_coords[0].astype(int)
            assert got.mask[y, x]


def test_coco_round_trip_rle_is_exact_and_polygons_are_close(synth_root, tmp_path):
    samples = [open_dataset(synth_root / "val")[i] for i in range(4)]
    rle_file = write_coco(samples, tmp_path / "rle" / "instances_val.json")
    poly_file = write_coco(samples, tmp_path / "poly" / "instances_val.json", polygons=True)

    rle_read = CocoDataset(rle_file)
    poly_read = CocoDataset(poly_file)
    assert len(rle_read) == len(poly_read) == len(samples)
    for index, sample in enumerate(samples):
        for got, want in zip(rle_read[index].annotations, sample.annotations):
            assert np.array_equal(got.mask, want.mask)
        poly_annotations = poly_read[index].annotations
        assert len(poly_annotations) == len(sample.annotations)
        for got, want in zip(poly_annotations, sample.annotations):
            assert mask_iou(got.mask, want.mask) >= 0.95
            assert np.allclose(got.bbox_xyxy, want.bbox_xyxy)

    segmentations = [a["segmentation"] for a in json.loads(poly_file.read_text())["annotations"]]
    as_polygons = sum(isinstance(s, list) for s in segmentations)
    assert as_polygons >= len(segmentations) // 2, "most synthetic masks have no holes and should be polygons"


def test_coco_reader_skips_crowd_and_reads_uncompressed_rle(tmp_path):
    image = np.full((20, 30, 3), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    mask = np.zeros((20, 30), bool)
    mask[5:10, 3:13] = True
    flat = mask.flatten(order="F").astype(np.uint8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    record = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [3, 5, 10, 5],
             "segmentation": {"size": [20, 30], "counts": counts}},
            {"id": 2, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 0, 30, 20],
             "segmentation": {"size": [20, 30], "counts": [0, 600]}},
        ],
    }
    (tmp_path / "instances_x.json").write_text(json.dumps(record))
    sample = CocoDataset(tmp_path / "instances_x.json")[0]
    assert len(sample.annotations) == 1
    assert np.array_equal(sample.annotations[0].mask, mask)
    assert sample.annotations[0].bbox_xyxy.tolist() == [3, 5, 13, 10]


def test_open_dataset_recognises_each_layout(synth_root, tmp_path):
    samples = [open_dataset(synth_root / "val")[0]]
    coco_root = tmp_path / "coco"
    write_coco(samples, coco_root / "annotations" / "instances_val.json", image_dir=coco_root / "val")
    assert isinstance(open_dataset(coco_root), CocoDataset)
    assert isinstance(open_dataset(coco_root / "annotations" / "instances_val.json"), CocoDataset)
    assert len(open_dataset(coco_root)[0].annotations) == len(samples[0].annotations)
    assert isinstance(open_dataset(synth_root / "train"), SA1BDataset)
    with pytest.raises(DatasetError, match=r"pass one of its split folders \(train, val\)"):
        open_dataset(synth_root)


# --------------------------------------------------------------------------- bad input


def test_folder_without_annotations_is_one_clear_error(tmp_path):
    cv2.imwrite(str(tmp_path / "only_image.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError) as info:
        open_dataset(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "no annotations found" in message and "\n" not in message
    with pytest.raises(DatasetError, match="no SA-1B annotation files"):
        SA1BDataset(tmp_path)


def _copy_first_sample(synth_root: Path, dest: Path) -> tuple[Path, dict]:
    dest.mkdir()
    json_path = sorted((synth_root / "val").glob("*.json"))[0]
    shutil.copy(json_path, dest / json_path.name)
    shutil.copy(json_path.with_suffix(".jpg"), dest / json_path.with_suffix(".jpg").name)
    return dest / json_path.name, json.loads(json_path.read_text())


def test_corrupt_rle_is_one_clear_error_naming_the_file(synth_root, tmp_path):
    json_path, record = _copy_first_sample(synth_root, tmp_path / "corrupt")
    record["annotations"][1]["segmentation"]["counts"] = "garbage!!"
    json_path.write_text(json.dumps(record))
    with pytest.raises(DatasetError) as info:
        SA1BDataset(json_path.parent)[0]
    assert str(info.value) == f"{json_path} annotation 1: RLE counts cannot be decoded (corrupt segmentation)"

    record["annotations"][1]["segmentation"]["counts"] = ""
    json_path.write_text(json.dumps(record))
    with pytest.raises(DatasetError, match="RLE counts are empty"):
        SA1BDataset(json_path.parent)[0]


def test_rle_size_mismatch_is_one_clear_error(synth_root, tmp_path):
    json_path, record = _copy_first_sample(synth_root, tmp_path / "mismatch")
    record["annotations"][0]["segmentation"]["size"] = [IMG, IMG + 1]
    json_path.write_text(json.dumps(record))
    with pytest.raises(DatasetError) as info:
        SA1BDataset(json_path.parent)[0]
    assert str(info.value) == (
        f"{json_path} annotation 0: RLE size [{IMG}, {IMG + 1}] does not match the image size [{IMG}, {IMG}]"
    )


def test_unreadable_image_is_one_clear_error(synth_root, tmp_path):
    json_path, _ = _copy_first_sample(synth_root, tmp_path / "badimage")
    json_path.with_suffix(".jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError) as info:
        SA1BDataset(json_path.parent)[0]
    assert str(info.value) == f"{json_path.with_suffix('.jpg')}: image is missing or cannot be decoded"


def test_unreadable_background_photo_is_one_clear_error_and_writes_nothing(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DatasetError, match=f"{missing}: image is missing or cannot be decoded"):
        generate_synthetic(tmp_path / "out", {"val": 1}, img_size=64, background_images=[missing], progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_split_is_not_overwritten_silently(synth_root):
    before = sorted(p.name for p in (synth_root / "train").iterdir())
    with pytest.raises(DatasetError, match="already exists; pass overwrite=True"):
        generate_synthetic(synth_root, {"train": 1}, img_size=IMG, seed=SEED, progress=False)
    assert sorted(p.name for p in (synth_root / "train").iterdir()) == before


# --------------------------------------------------------------------------- generator


def test_generator_is_deterministic_and_seeds_differ(tmp_path):
    counts = {"train": 2, "val": 1}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        generate_synthetic(tmp_path / name, counts, img_size=96, seed=seed, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.*"))
    assert len(files) == 6
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert all((tmp_path / "a" / rel).read_bytes() != (tmp_path / "c" / rel).read_bytes() for rel in files)


def test_generator_writes_the_same_files_with_worker_processes(tmp_path):
    counts = {"train": 3, "val": 1}
    generate_synthetic(tmp_path / "one", counts, img_size=64, seed=5, progress=False)
    generate_synthetic(tmp_path / "two", counts, img_size=64, seed=5, progress=False, workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.*"))
    assert len(files) == 8
    assert sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*.*")) == files
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


def test_splits_use_different_streams(photos):
    train = render_synthetic_sample(0, "train", 0, 96, photos)
    val = render_synthetic_sample(0, "val", 0, 96, photos)
    assert not np.array_equal(train.image, val.image)


def test_objects_per_image_sizes_and_shape_variety(photos):
    size = 256
    fractions, holes, thin = [], 0, 0
    for index in range(40):
        sample = render_synthetic_sample(1, "train", index, size, photos)
        assert MIN_OBJECTS <= len(sample.annotations) <= MAX_OBJECTS
        union = np.zeros((size, size), int)
        for ann in sample.annotations:
            assert ann.area >= MIN_VISIBLE_PIXELS
            union += ann.mask
            fractions.append(ann.area / size**2)
            _, hierarchy = cv2.findContours(ann.mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
            holes += int((hierarchy[0][:, 3] >= 0).any())
            thin += int(ann.area >= 150 and distance_to_boundary(ann.mask).max() <= 5)
        assert union.max() == 1, "visible masks of one image must not overlap"
    assert min(fractions) < 0.003, "tiny objects (~0.1% of the image) are missing"
    assert max(fractions) > 0.2, "large objects (up to half the image) are missing"
    assert max(fractions) <= 0.6
    assert holes >= 5 and thin >= 5, (holes, thin)


# --------------------------------------------------------------------------- prompts


def _random_masks(count: int, shape=(64, 80)) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    masks = []
    while len(masks) < count:
        mask = cv2.GaussianBlur(rng.random(shape), (0, 0), rng.uniform(2, 6)) > rng.uniform(0.45, 0.55)
        if mask.any() and not mask.all():
            masks.append(mask)
    return masks


def test_sampled_points_stay_inside_masks_and_center_bias_moves_them_inward():
    for mask in _random_masks(20):
        distance = distance_to_boundary(mask)
        uniform_depth, biased_depth = [], []
        for seed in range(30):
            rng = np.random.default_rng(seed)
            for bias, depths in ((0.0, uniform_depth), (3.0, biased_depth)):
                x, y = sample_point_in_mask(mask, rng, center_bias=bias)
                assert x == int(x) and y == int(y) and mask[int(y), int(x)]
                depths.append(distance[int(y), int(x)])
            bx, by = sample_background_point(mask, rng)
            assert not mask[int(by), int(bx)]
        assert np.mean(biased_depth) >= np.mean(uniform_depth)
        cx, cy = mask_center_point(mask)
        assert distance[int(cy), int(cx)] == distance.max()


def test_mask_center_point_of_a_rectangle_is_its_middle():
    mask = np.zeros((50, 80), bool)
    mask[10:31, 20:61] = True  # 21 rows x 41 columns: a unique farthest pixel in the middle row
    x, y = mask_center_point(mask)
    assert y == 20 and 30 <= x <= 50


def test_sampled_boxes_are_within_jitter_of_the_mask_box_and_inside_the_image():
    for mask in _random_masks(10):
        bbox = bbox_xyxy_from_mask(mask)
        side = np.array([bbox[2] - bbox[0], bbox[3] - bbox[1]] * 2)
        h, w = mask.shape
        for seed in range(50):
            box = sample_box(mask, np.random.default_rng(seed), jitter=0.1)
            assert np.all(np.abs(box - bbox) <= 0.1 * side + 1e-4)
            assert 0 <= box[0] < box[2] <= w and 0 <= box[1] < box[3] <= h
        assert np.array_equal(sample_box(mask, np.random.default_rng(0), jitter=0.0), bbox)
        assert np.array_equal(sample_box(bbox, np.random.default_rng(0), jitter=0.0, image_hw=(h, w)), bbox)


def test_correction_clicks_land_in_the_error_region_with_the_right_label():
    gt = np.zeros((60, 60), bool)
    gt[10:40, 10:40] = True
    too_small = np.zeros_like(gt)
    too_small[10:40, 20:40] = True  # misses a 30x10 strip: a positive click belongs there
    too_big = gt.copy()
    too_big[10:40, 40:55] = True  # adds a 30x15 strip: a negative click belongs there
    for pred, label, region in ((too_small, 1, gt & ~too_small), (too_big, 0, too_big & ~gt)):
        point, got_label = center_correction_click(gt, pred)
        assert got_label == label and region[int(point[1]), int(point[0])]
        as_float = center_correction_click(gt.astype(np.float32), pred.astype(np.float32))
        assert as_float[1] == label and np.array_equal(as_float[0], center_correction_click(gt, pred)[0])
    assert center_correction_click(gt, gt) is None


def test_correction_click_targets_the_larger_error_component():
    gt = np.zeros((60, 60), bool)
    gt[5:55, 5:55] = True
    pred = gt.copy()
    pred[10:14, 10:14] = False  # small miss (16 px)
    pred[30:50, 30:50] = False  # large miss (400 px)
    point, label = center_correction_click(gt, pred)
    assert label == 1 and 30 <= point[0] < 50 and 30 <= point[1] < 50


def test_prompt_sampling_on_empty_masks_is_a_clear_error():
    empty = np.zeros((10, 10), bool)
    with pytest.raises(ValueError, match="mask is empty"):
        sample_point_in_mask(empty, np.random.default_rng(0))
    with pytest.raises(ValueError, match="mask is empty"):
        mask_center_point(empty)
