"""Task logs: what a task writes, captured in its child process per attempt and read by the parent.

    child (capture)                       parent (buffer)                         stored text (format)
    sys.stdout / sys.stderr / logging --> a shared memory file (mmap) -----+--> framed lines, one record
    neutrino.log(...)                     header: [end, dropped bytes]     |    a line: "\\x1f<ts> <LEVEL>
    fd 1 / fd 2 (C code, subprocesses) -> a plain file ---------------------+    <stream> <text>"

`format` holds the text format every layer shares, `capture` what the child installs, `buffer` the
parent's side. Imports no Django.
"""
