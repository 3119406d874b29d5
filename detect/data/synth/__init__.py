"""Synthetic retail shelves, the project's embedded default dataset (``detect synth``).

:mod:`.products` draws the ten product classes, :mod:`.scene` lays them out on shelves and
checkout belts, :mod:`.camera` photographs a scene (perspective, light, blur, noise; visible
boxes), and :mod:`.dataset` writes scenes as a Pascal VOC dataset (the command: :mod:`.synth_cli`).
"""

from detect.data.synth.dataset import CLASSES, Scene, render_dataset, render_scene, scene_to_voc_xml, split_indices

__all__ = ["CLASSES", "Scene", "render_dataset", "render_scene", "scene_to_voc_xml", "split_indices"]
