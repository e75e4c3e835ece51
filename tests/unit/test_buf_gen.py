"""Stubs for other languages generate without edits: buf.gen.yaml's managed mode gives every file
of protos/ a go_package and a java_package. The remote plugins cannot be fetched here, so the test
runs the real buf.gen.yaml's managed settings and inputs with a local plugin that writes back the
file options buf hands to a plugin, and checks them; it also checks the plugins the file lists."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".venv" / "bin" / "buf"

PLUGIN = """#!{python}
import json, sys
from google.protobuf.compiler import plugin_pb2
request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
options = {{
    f.name: {{"go_package": f.options.go_package, "java_package": f.options.java_package,
              "java_multiple_files": f.options.java_multiple_files}}
    for f in request.proto_file if f.name in request.file_to_generate
}}
response = plugin_pb2.CodeGeneratorResponse()
response.file.add(name="options.json", content=json.dumps(options))
sys.stdout.buffer.write(response.SerializeToString())
"""


def test_the_template_lists_go_java_and_typescript_plugins():
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    remotes = {p["remote"] for p in template["plugins"]}
    assert {
        "buf.build/protocolbuffers/go",
        "buf.build/grpc/go",
        "buf.build/protocolbuffers/java",
        "buf.build/grpc/java",
        "buf.build/bufbuild/es",
    } <= remotes
    assert template["managed"]["enabled"] is True


def test_managed_mode_gives_every_file_its_go_and_java_package(tmp_path):
    template = yaml.safe_load((ROOT / "buf.gen.yaml").read_text())
    plugin = tmp_path / "protoc-gen-options"
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    template["plugins"] = [{"local": str(plugin), "out": str(tmp_path / "out"), "strategy": "all"}]
    template["inputs"] = [{"directory": str(ROOT / "protos")}]
    done = subprocess.run(
        [str(BUF), "generate", "--template", json.dumps(template)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    options = json.loads((tmp_path / "out" / "options.json").read_text())
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    assert sorted(options) == protos
    prefix = template["managed"]["override"][0]["value"]
    for name, found in options.items():
        folder = str(Path(name).parent)  # e.g. catalog_service/v1
        assert found["go_package"].startswith(f"{prefix}/{folder};"), (name, found)
        assert found["java_package"] == "com.example.creditgrants." + folder.replace("/", "."), (name, found)
        assert found["java_multiple_files"] is True
