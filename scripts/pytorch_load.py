#!/usr/bin/env python3
"""Loads a diffuse checkpoint into a PyTorch U-Net of the same architecture and checks the outputs match.

Optional: diffuse never depends on PyTorch. Without torch this script says so and exits 0.

The safetensors file is parsed by hand (8-byte little-endian header length, a JSON header, raw
little-endian tensors), with no safetensors package; the tensors are loaded into
benchmarks/pytorch_reference.py's UNet by their names (down.0.block.1.conv1.weight, ...), strictly:
every parameter must be in the file and nothing else may be left over. The U-Net's configuration comes
from the file's metadata (diffuse.unet_config).

diffuse_sample --dump-io writes a fixed input (x, t, labels) and diffuse's output on it as .npy files;
this script runs the PyTorch module on the same input and reports the largest absolute difference,
which must be within float32 tolerance. For a latent diffusion checkpoint (diffuse.latent in its
metadata) it also loads the autoencoder's weights file (where the checkpoint says, or --autoencoder)
into benchmarks/pytorch_reference.py's Autoencoder by name and compares the encoder's moments and the
decoder's output on diffuse_sample's fixed input the same way.

    python3 scripts/pytorch_load.py --checkpoint out/train/checkpoint.safetensors \
        [--sample build/release/examples/diffuse_sample] [--no-ema] [--tolerance 1e-4]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError:
    print("pytorch_load.py: PyTorch (or NumPy) is not installed (apt-get install python3-torch); skipped")
    sys.exit(0)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
from pytorch_reference import Autoencoder, UNet  # noqa: E402  (the same architectures and parameter names)

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "F16": np.float16, "I32": np.int32,
          "U8": np.uint8}


def read_safetensors(path):
    """The tensors of a safetensors file by name (NumPy arrays) and its __metadata__ strings."""
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len].decode("utf-8"))
    metadata = header.pop("__metadata__", {})
    base = 8 + header_len
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        array = np.frombuffer(data[base + begin:base + end], dtype=dtype).reshape(entry["shape"])
        tensors[name] = array.astype(array.dtype.newbyteorder("="))
    return tensors, metadata


def build_model(config):
    return UNet(ch=config["model_channels"], mult=tuple(config["channel_mult"]), nres=config["num_res_blocks"],
                attn_res=tuple(config["attention_resolutions"]), dropout=config["dropout"], groups=config["groups"],
                cin=config["in_channels"], cout=config["out_channels"], classes=config["num_classes"],
                size=config["image_size"])


def load_strictly(model, tensors, prefix, weights, path):
    """Loads `model` from the file's tensors `prefix` + name; every parameter must be there and no weight left over."""
    expected = model.state_dict()
    state = {}
    for name in expected:
        if prefix + name not in tensors:
            sys.exit(f"pytorch_load.py: {path} has no tensor {prefix + name}")
        state[name] = torch.from_numpy(np.ascontiguousarray(tensors[prefix + name]))
    unused = sorted(w[len(prefix):] for w in weights if w[len(prefix):] not in expected)
    if unused:
        sys.exit(f"pytorch_load.py: tensors in {path} that the PyTorch module does not have: {unused[:5]}")
    model.load_state_dict(state, strict=True)
    model.eval()


def compare(what, theirs, ours, tolerance):
    difference = float(np.max(np.abs(theirs - ours)))
    scale = float(np.max(np.abs(theirs)))
    print(f"{what}: max |PyTorch - diffuse| = {difference:.3g} (outputs up to {scale:.3g})")
    if not difference <= tolerance:
        sys.exit(f"pytorch_load.py: {what}: the outputs differ by {difference:.3g}, more than {tolerance:g}")


def check_autoencoder(path, stem, tolerance):
    """A latent model's autoencoder: its weights file loaded by name, encode and decode on diffuse's fixed input."""
    tensors, metadata = read_safetensors(path)
    c = json.loads(metadata["diffuse.autoencoder_config"])
    model = Autoencoder(cin=c["in_channels"], ch=c["ch"], mult=tuple(c["ch_mult"]), nres=c["num_res_blocks"],
                        z=c["z_channels"], groups=c["groups"])
    load_strictly(model, tensors, "", set(tensors), path)
    x = np.load(stem + "_ae_x.npy")
    with torch.no_grad():
        moments = model.encode(torch.from_numpy(x)).numpy()
        decoded = model.decode(torch.from_numpy(np.load(stem + "_ae_z.npy"))).numpy()
    print(f"autoencoder {path}: {sum(p.numel() for p in model.parameters()):,} parameters loaded by name")
    compare(f"encoder moments on {list(x.shape)}", moments, np.load(stem + "_ae_moments.npy"), tolerance)
    compare("decoder on their means", decoded, np.load(stem + "_ae_decoded.npy"), tolerance)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a diffuse_train checkpoint (or weights file)")
    parser.add_argument("--sample", default=os.path.join(ROOT, "build/release/examples/diffuse_sample"),
                        help="the diffuse_sample program, which writes diffuse's output on the fixed input")
    parser.add_argument("--no-ema", action="store_true", help="compare the trained weights, not the EMA's")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")
    parser.add_argument("--autoencoder", help="a latent model's autoencoder weights file [default: where the "
                                              "checkpoint says]")
    args = parser.parse_args()

    tensors, metadata = read_safetensors(args.checkpoint)
    config = json.loads(metadata["diffuse.unet_config"])
    training_state = metadata.get("diffuse.checkpoint") == "training_state"
    use_ema = training_state and not args.no_ema
    model = build_model(config)
    prefix = "ema." if use_ema else ""
    # The file's tensors that are weights of the kind loaded (as diffuse::load_weights counts them).
    sections = ("ema.", "optimizer.", "trainer.", "generator.")
    if not training_state:
        weights = set(tensors)
    elif use_ema:
        weights = {n for n in tensors if n.startswith("ema.") and n != "ema.num_updates"}
    else:
        weights = {n for n in tensors if not n.startswith(sections)}
    load_strictly(model, tensors, prefix, weights, args.checkpoint)
    latent = json.loads(metadata["diffuse.latent"]) if "diffuse.latent" in metadata else None
    autoencoder = args.autoencoder or (latent["autoencoder"] if latent else None)

    with tempfile.TemporaryDirectory() as work:
        stem = os.path.join(work, "io")
        command = [args.sample, "--checkpoint", args.checkpoint, "--dump-io", stem, "--out", "", "--count", "1",
                   "--steps", "1", "--threads", "1"]
        if not use_ema:
            command.append("--no-ema")
        if args.autoencoder:
            command += ["--autoencoder", args.autoencoder]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        if latent:
            check_autoencoder(autoencoder, stem, args.tolerance)
        x = np.load(stem + "_x.npy")
        t = np.load(stem + "_t.npy")
        labels = np.load(stem + "_labels.npy")
        ours = np.load(stem + "_out.npy")
    with torch.no_grad():
        y = torch.from_numpy(labels) if config["num_classes"] > 0 else None
        theirs = model(torch.from_numpy(x), torch.from_numpy(t), y).numpy()
    difference = float(np.max(np.abs(theirs - ours)))
    scale = float(np.max(np.abs(theirs)))
    print(f"PyTorch {torch.__version__}: {sum(p.numel() for p in model.parameters()):,} parameters loaded by name "
          f"from {args.checkpoint} ({'EMA' if use_ema else 'trained'} weights); output on a fixed input "
          f"{list(x.shape)}, t = {t.tolist()}, labels = {labels.tolist()}: max |PyTorch - diffuse| = {difference:.3g} "
          f"(outputs up to {scale:.3g})")
    if not difference <= args.tolerance:
        sys.exit(f"pytorch_load.py: the outputs differ by {difference:.3g}, more than {args.tolerance:g}")
    print("match within float32 tolerance")


if __name__ == "__main__":
    main()
