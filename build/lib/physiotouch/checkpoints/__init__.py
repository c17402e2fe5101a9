"""Everything about checkpoint files, in one package; import the module you need (nothing is loaded here). The one
way a file is read (`torch.load(weights_only=True)`, safetensors, `CheckpointError`) sits below every package, in
`physiotouch/utils/safe_load.py`, so that `models/` (CLIP folders) reads files without importing this package:

- `format`: our `.ckpt` layout (`FORMAT`), its checks (model size, resumability) and `load_model`;
- `io`: atomic writes; `lightning_io`: the Lightning `CheckpointIO` that uses them (and reads safely);
- `weights`: `init_from`, initial weights from one of our checkpoints or a reference one;
- `reference`: the reference program's `best.pth` / `last.pth` (renamed keys, inferred sizes), and conversion;
- `export`: the safetensors copy of a model that a release ships.
"""
