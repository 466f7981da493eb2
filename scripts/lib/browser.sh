# The browser the page tests and the web bench drive: Debian's Chromium
# (Playwright's own browser download is not reachable; check_prereqs
# installs the distribution's) and Playwright for Python with pytest in a
# venv under $TOOLS/browser. Source after common.sh.

# ensure_browser_tools: installs what is missing; exports EARSHOT_CHROMIUM.
ensure_browser_tools() {
  check_prereqs browser
  export EARSHOT_CHROMIUM="${EARSHOT_CHROMIUM:-/usr/bin/chromium}"
  if [ ! -x "$TOOLS/browser/bin/pytest" ] || ! "$TOOLS/browser/bin/python" -c 'import playwright' 2>/dev/null; then
    log "installing Playwright for Python and pytest into $TOOLS/browser"
    venv_install browser 'playwright==1.65.2' 'pytest==9.2.0'
  fi
}
