"""Data: the dataset ``registry`` (each dataset's classes, palette, label format and ignore rule; stored ids to class
ids and back), ``datasets`` (readers of CamVid, Cityscapes, ADE20K and labelled folders), ``files`` (images, label
images, atomic writes), ``augment`` (training augmentation) and the bundled ``example``."""
