"""Data sets, transforms and spec strings for dynviz.

Build a dataset from a spec string::

    from dynviz.data import build_dataset, train_transforms

    train = build_dataset("synthetic:count=200,size=128x128", split="train",
                          transform=train_transforms(crop=(96, 96)))
    val = build_dataset("cityscapes:/data/cityscapes", split="val")

Specs: ``synthetic[:count=N,size=HxW,classes=K,seed=S,regime=tiny|huge|mixed|per-image]``,
``cityscapes:PATH``, ``voc:PATH``, ``folder:PATH[,classes=K,ignore=I]`` (see
:mod:`dynviz.data.spec` and :mod:`dynviz.data.folder`).

Every dataset is a :class:`torch.utils.data.Dataset` (a :class:`SegmentationDataset`) with
``num_classes``, ``class_names``, ``ignore_index = 255`` and ``name``. ``dataset[i]`` is a dict:

- ``"image"``: float32 tensor ``(3, H, W)``, normalised as the official code (BGR, mean
  ``[103.530, 116.280, 123.675]`` subtracted, std 1);
- ``"label"``: int64 tensor ``(H, W)``, 255 = ignore;
- ``"image_id"``: str, stable and unique within the dataset;
- ``"stats"``: ``dict[str, float]`` of object-scale statistics of the untransformed image
  (``{}`` for real data without instance information).

``dataset.raw(i)`` returns the untransformed ``(image (H, W, 3) uint8 RGB, label (H, W) uint8)``
for display.

Transform signature (the one contract for every transform and dataset)::

    transform(image: np.ndarray, label: np.ndarray, rng: np.random.Generator)
        -> tuple[np.ndarray, np.ndarray]

``image`` is ``(H, W, 3)`` uint8 RGB and ``label`` ``(H, W)`` uint8, both before normalisation.
The dataset passes ``rng = numpy.random.default_rng([transform_seed, epoch, index])``, so
augmentation is reproducible and resumable; call ``dataset.set_epoch(epoch)`` each epoch.

All bad input raises :class:`DataError` (a ``ValueError``) naming the file or spec value.
"""

from __future__ import annotations

from dynviz.data.base import (
    MIN_IMAGE_SIDE,
    DatasetTransform,
    SegmentationDataset,
    check_image_size,
    load_pair,
    read_image,
    read_label,
)
from dynviz.data.cityscapes import (
    CITYSCAPES_CLASSES,
    CityscapesDataset,
    label_id_to_train_id_lut,
    train_id_to_label_id_lut,
    write_cityscapes_layout,
)
from dynviz.data.errors import DataError, DataFileError
from dynviz.data.folder import FolderDataset, write_folder_layout
from dynviz.data.spec import DatasetSpec, build_dataset, parse_spec
from dynviz.data.synthetic import (
    REGIME_CODES,
    REGIMES,
    SceneOptions,
    SyntheticSample,
    SyntheticScenes,
)
from dynviz.data.transforms import (
    IGNORE_INDEX,
    PIXEL_MEAN_BGR,
    Compose,
    RandomCropPad,
    RandomHorizontalFlip,
    RandomScale,
    Resize,
    Transform,
    denormalize,
    normalize,
    train_transforms,
)
from dynviz.data.voc import VOC_CLASSES, VOCDataset

__all__ = [
    "CITYSCAPES_CLASSES",
    "IGNORE_INDEX",
    "MIN_IMAGE_SIDE",
    "PIXEL_MEAN_BGR",
    "REGIMES",
    "REGIME_CODES",
    "VOC_CLASSES",
    "CityscapesDataset",
    "Compose",
    "DataError",
    "DataFileError",
    "DatasetSpec",
    "DatasetTransform",
    "FolderDataset",
    "RandomCropPad",
    "RandomHorizontalFlip",
    "RandomScale",
    "SceneOptions",
    "Resize",
    "SegmentationDataset",
    "SyntheticSample",
    "SyntheticScenes",
    "Transform",
    "VOCDataset",
    "build_dataset",
    "check_image_size",
    "denormalize",
    "label_id_to_train_id_lut",
    "load_pair",
    "normalize",
    "parse_spec",
    "read_image",
    "read_label",
    "train_id_to_label_id_lut",
    "train_transforms",
    "write_cityscapes_layout",
    "write_folder_layout",
]
