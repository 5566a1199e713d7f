#!/bin/bash
# Sourced by run.sh and study_metrics.sh.
# A `paser` package made of a checkout's folders (paser/ and the folders it installs as paser.common, .selection,
# .recovery, .pipelines, .data), first on PYTHONPATH: an editable install of paser maps those subpackages onto its
# own checkout, so with PYTHONPATH=TREE alone `paser.pipelines` would still be the installed checkout's. Each side
# prints the file it imports the run engine from.
shim() {
  local tree=$1 dir=$OUT/shim-$2
  rm -rf "$dir"; mkdir -p "$dir/paser"
  ln -s "$tree"/paser/* "$dir/paser/"
  for package in common selection recovery pipelines data; do
    [ -d "$tree/$package" ] && ln -s "$tree/$package" "$dir/paser/$package"
  done
  ln -s "$tree/pyproject.toml" "$dir/pyproject.toml"
  echo "$dir"
}
