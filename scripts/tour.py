"""Replays the README's tour and checks each response's shape.

    python3 scripts/tour.py README.md WORK_DIR

Takes the ```sh blocks between `<!-- tour -->` and `<!-- /tour -->`, runs
them in order in one bash process in WORK_DIR (so a server started with `&`
in one block is there for the next), and compares what each block prints
with the ```json block that follows it in the README: the same keys, the
same list lengths and the same kinds of value (numbers are not compared:
they are from the run that the README shows). Exits 1 at the first
difference, naming the step.
"""

import json
import re
import subprocess
import sys
from pathlib import Path


def blocks(readme):
    text = readme.split("<!-- tour -->", 1)[1].split("<!-- /tour -->", 1)[0]
    return re.findall(r"```(sh|json)\n(.*?)```", text, re.S)


def shape(value):
    if isinstance(value, dict):
        return {key: shape(v) for key, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, (int, float)):
        return "number"
    return "string"


def main():
    readme, work = Path(sys.argv[1]).read_text(), Path(sys.argv[2])
    steps = blocks(readme)
    out = work / "tour-output"
    out.mkdir(parents=True, exist_ok=True)
    script = ["set -euo pipefail"]
    expected = {}
    for i, (kind, body) in enumerate(steps):
        if kind == "sh":
            script.append(f"echo '== tour step {i}' >&2")
            script.append(f"{{\n{body}}} > {out}/{i}.txt")
        elif i > 0 and steps[i - 1][0] == "sh":
            expected[i - 1] = json.loads(body)
        else:
            sys.exit(f"tour: a json block (#{i}) that follows no sh block")
    # A server left running by a failed step must not outlive the tour.
    script.insert(1, "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT")
    run = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work)
    if run.returncode != 0:
        sys.exit(f"tour: a step failed (exit {run.returncode}); see the last '== tour step' above")
    for i, want in expected.items():
        printed = (out / f"{i}.txt").read_text()
        got = json.loads(printed)
        if shape(got) != shape(want):
            sys.exit(
                f"tour step {i}: the response's shape differs from the README's\n"
                f"README: {json.dumps(shape(want))}\ngot:    {json.dumps(shape(got))}\n"
                f"response: {printed}"
            )
    print(f"tour: {sum(k == 'sh' for k, _ in steps)} steps ran, {len(expected)} responses checked")


if __name__ == "__main__":
    main()
