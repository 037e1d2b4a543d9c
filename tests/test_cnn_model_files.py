"""Model files: checksums of the weights, files from before checksums, torch dicts, old OpenSoundscape checkpoints.

No audio here: models are compared by running their networks on the same random batch.
"""
from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from opso_nb.ml import cnn as cnn_module
from opso_nb.ml.cnn import CNN, ModelLoadError, load_model, load_outdated_model

torch.set_num_threads(1)
CLASSES = ["low_tone", "high_tone"]
SHAPE = (32, 32, 1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CNN("resnet18", CLASSES, 1.0, sample_shape=SHAPE, weights=None, device="cpu", verbose=0, use_amp=False)


def outputs(m, seed=0):
    height, width, channels = SHAPE
    x = torch.rand(3, channels, height, width, generator=torch.Generator().manual_seed(seed))
    m.network.eval()
    with torch.no_grad():
        return m.network(x).numpy()


def _middle_of_largest_tensor(path):
    """Byte offset of the middle of the largest tensor stored in a torch zip file."""
    info = max(zipfile.ZipFile(path).infolist(), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len + info.file_size // 2


def test_flipped_byte_in_weights_is_detected(model, tmp_path):
    path = tmp_path / "m.model"
    model.save(path)
    raw = bytearray(path.read_bytes())
    raw[_middle_of_largest_tensor(path)] ^= 0x01
    damaged = tmp_path / "damaged.model"
    damaged.write_bytes(bytes(raw))
    torch.load(damaged, weights_only=True)  # torch itself does not notice
    with pytest.raises(ModelLoadError, match="damaged.model.*checksum"):
        load_model(damaged)
    with pytest.raises(ModelLoadError, match="checksum"):
        CNN("resnet18", CLASSES, 1.0, sample_shape=SHAPE, weights=None, device="cpu").load_weights(damaged)
    np.testing.assert_array_equal(outputs(load_model(path, device="cpu")), outputs(model))  # the intact file


def test_checksum_covers_config_and_ignores_memory_layout(model):
    state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
    digest = cnn_module.weights_checksum(state, "config")
    assert digest == cnn_module.weights_checksum({k: v.contiguous() for k, v in state.items()}, "config")
    assert digest != cnn_module.weights_checksum(state, "config!")
    state["fc.bias"][0] += 1e-7
    assert digest != cnn_module.weights_checksum(state, "config")


def test_file_without_checksum_loads_with_a_warning(model, tmp_path):
    path = tmp_path / "old.model"
    model.save(path)
    payload = torch.load(path, weights_only=True)
    del payload["weights_sha256"]
    payload["format_version"] = 1  # the layout before checksums
    torch.save(payload, path)
    with pytest.warns(UserWarning, match="before model files carried a checksum"):
        loaded = load_model(path, device="cpu")
    np.testing.assert_array_equal(outputs(loaded), outputs(model))


def test_torch_dict_round_trip(model, tmp_path):
    model.save(tmp_path / "m.pt", as_torch_dict=True)
    rebuilt = CNN.from_torch_dict(tmp_path / "m.pt", device="cpu")
    assert (rebuilt.classes, rebuilt.sample_duration, rebuilt.single_target, rebuilt.sample_shape) == \
        (CLASSES, 1.0, False, SHAPE)
    np.testing.assert_array_equal(outputs(rebuilt), outputs(model))
    with pytest.raises(ModelLoadError, match="from_torch_dict"):
        load_model(tmp_path / "m.pt")
    custom = CNN(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2)), CLASSES, 1.0, device="cpu")
    with pytest.raises(ValueError, match="named architecture"):
        custom.save_torch_dict(tmp_path / "custom.pt")


def test_load_outdated_model_from_a_05_checkpoint(tmp_path):
    torch.manual_seed(0)
    old_net = torchvision.models.resnet18(num_classes=2).eval()
    checkpoint = {"model_state_dict": old_net.state_dict(), "labels_yaml": "0: absent\n1: present\n",
                  "optimizer_state_dict": {}, "train_loss": 0.3}
    torch.save(checkpoint, tmp_path / "opso050.model")
    with pytest.warns(UserWarning, match="preprocessing differed"):
        model = load_outdated_model(tmp_path / "opso050.model", "resnet18", 5.0, device="cpu")
    assert model.classes == ["absent", "present"] and model.sample_duration == 5.0
    x = torch.rand(2, 3, 64, 64)
    model.network.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.network(x).numpy(), old_net(x).numpy(), atol=1e-5)
    # OpenSoundscape 0.6.0 naming and a class list
    renamed = {("classifier." + k[3:]) if k.startswith("fc.") else "feature." + k: v
               for k, v in old_net.state_dict().items()}
    torch.save({"network_state_dict": renamed, "classes": ["neg", "pos"]}, tmp_path / "opso060.model")
    with pytest.warns(UserWarning):
        model060 = load_outdated_model(tmp_path / "opso060.model", "resnet18", 5.0, device="cpu")
    assert model060.classes == ["neg", "pos"]
    # a checkpoint holding pickled objects is refused, never unpickled
    pickled = tmp_path / "pickled.model"
    torch.save({"model_state_dict": old_net.state_dict(), "scores": np.zeros(3)}, pickled)
    with pytest.raises(ModelLoadError, match="never unpickles"):
        load_outdated_model(pickled, "resnet18", 5.0)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_outdated_model(tmp_path / "opso050.model", "resnet34", 5.0)


def test_unreadable_model_files_say_permission_denied(model):
    import shutil
    import subprocess
    import sys
    import tempfile
    import textwrap

    # outside pytest's own temporary folders, which only their owner may enter
    folder = Path(tempfile.mkdtemp(prefix="opso_nb_permissions_"))
    try:
        folder.chmod(0o755)
        locked_file = folder / "locked.model"
        model.save(locked_file)
        locked_file.chmod(0)
        (folder / "closed").mkdir()
        model.save(folder / "closed" / "inside.model")
        (folder / "closed").chmod(0)
        code = textwrap.dedent(f"""
            import os
            from opso_nb.ml.cnn import ModelLoadError, load_model
            if os.geteuid() == 0:  # root reads anything: test as an unprivileged user
                os.setgid(65534); os.setuid(65534)
            for path in ({str(locked_file)!r}, {str(folder / "closed" / "inside.model")!r}):
                try:
                    load_model(path)
                except ModelLoadError as err:
                    print(err)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    finally:
        (folder / "closed").chmod(0o755)
        shutil.rmtree(folder)
    assert out.returncode == 0, out.stderr[-2000:]
    file_message, folder_message = out.stdout.strip().splitlines()
    assert "locked.model" in file_message and "permission denied (the file cannot be read)" in file_message
    assert "inside.model" in folder_message and "permission denied (a folder" in folder_message
    assert "does not exist" not in folder_message
