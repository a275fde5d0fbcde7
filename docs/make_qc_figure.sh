#!/usr/bin/env bash
# Makes docs/quickstart_qc.png, the QC picture shown in the README: the quick-start fit of the bundled example
# data with --qc (about 70 s on 2 CPU cores), then its scores. Needs inrsr installed (see the README).
# The fit's other outputs go to a temporary folder that is removed afterwards.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
data="$repo/example_data"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"  # so that the picture's caption names the output hr.nii.gz

inrsr fit "$data/stack_axial.nii.gz" "$data/stack_coronal.nii.gz" "$data/stack_sagittal.nii.gz" -o hr.nii.gz \
    --like "$data/mni_hr_1mm.nii.gz" --report report.json --qc "$repo/docs/quickstart_qc.png"
inrsr eval hr.nii.gz "$data/mni_hr_1mm.nii.gz" --mask "$data/mni_brain_mask.nii.gz"
echo "wrote $repo/docs/quickstart_qc.png"
