# Keep this version's venv and the one installed before it: the nucleus keeps the artifacts of both
# versions, so a rollback finds its venv ready and downloads nothing. Older ones go. facecap-venvs.txt
# holds the two, in install order; with no history yet, the previous version is the one that used the
# unversioned `venv`.
venvs=$(dirname "$VENV_DIR")
this=$(basename "$VENV_DIR")
history="$venvs/facecap-venvs.txt"
touch "$history"
previous=$(grep -v -x -F "$this" "$history" | tail -n 1)
[ -n "$previous" ] || previous=venv
printf '%s\n%s\n' "$previous" "$this" > "$history.new"
mv "$history.new" "$history"
for old in "$venvs"/venv "$venvs"/venv-*; do
  name=$(basename "$old")
  if [ -d "$old" ] && [ "$name" != "$this" ] && [ "$name" != "$previous" ]; then
    echo "removing $old (older than the previous version)"
    rm -rf "$old"
  fi
done
rm -rf "$venvs/pip-cache"
