"""``detect convert``: any dataset we read, or predict's detections, to VOC, COCO, YOLO or a cache
(:mod:`.converter`; the command in :mod:`.convert_cli`)."""
