from real_assets.core.checkpoints import finalize, staging_dir, verify


def _train_into(root, content: bytes):
    out = staging_dir(root, "dpo_checkpoint", "easy")
    (out / "model.safetensors").write_bytes(content)
    (out / "_trainer").mkdir()
    (out / "_trainer" / "scratch.bin").write_bytes(b"noise")
    return finalize(out)


def test_same_content_same_folder_and_scratch_is_dropped(tmp_path):
    first = _train_into(tmp_path, b"weights")
    second = _train_into(tmp_path, b"weights")
    assert first.path == second.path == tmp_path / "dpo_checkpoint" / "easy" / first.data_version
    assert list(first.manifest) == ["model.safetensors"]
    assert _train_into(tmp_path, b"other weights").data_version != first.data_version
    assert not [p for p in first.path.parent.iterdir() if p.name.startswith("_staging")]


def test_verify_names_every_kind_of_tamper(tmp_path):
    ckpt = _train_into(tmp_path, b"weights")
    assert verify(ckpt.path, ckpt.manifest) == []
    with open(ckpt.path / "model.safetensors", "ab") as f:
        f.write(b"\0")
    (ckpt.path / "extra.txt").write_text("x")
    problems = verify(ckpt.path, ckpt.manifest)
    assert "model.safetensors: sha256 differs" in problems
    assert "extra.txt: not in manifest" in problems
    (ckpt.path / "model.safetensors").unlink()
    assert "model.safetensors: missing" in verify(ckpt.path, ckpt.manifest)
    assert "missing" in verify(tmp_path / "nope", ckpt.manifest)[0]
