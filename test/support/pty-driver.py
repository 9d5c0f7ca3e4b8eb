#!/usr/bin/env python3
"""Run a command in a pseudo-terminal the way a user at a terminal would, and report what the
screen showed (test/support/pty.ts drives this; standard library only).

argv: JSON {"argv": [...], "env": {...}, "cwd": "...", "cols": 100, "rows": 30,
            "steps": [{"expect": REGEX, "send": TEXT, "settle": SECONDS}], "timeout": SECONDS}
The command gets the pty as its controlling terminal (a new session) and as stdin/stdout/stderr,
unless argv is a shell pipeline that gives it something else. For each step: wait until REGEX
matches the screen, wait "settle" seconds more (default 0.6: a spinner would have drawn over a
prompt by then; 0 records the screen that matched), record the screen, then type TEXT. At the end it prints one JSON object on stdout:
{"screens": [...], "final": SCREEN, "exitCode": N, "timedOut": BOOL}.
"""
import codecs, fcntl, json, os, pty, re, select, signal, struct, sys, termios, time

SETTLE = 0.6


class Screen:
    """The visible text of a terminal: enough of ECMA-48 for readline, ora and inquirer."""

    def __init__(self, cols, rows):
        self.cols, self.rows = cols, rows
        self.lines = [[' '] * cols for _ in range(rows)]
        self.r = self.c = 0
        self.saved = (0, 0)
        self.state, self.params = 'text', ''

    def text(self):
        return '\n'.join(''.join(l).rstrip() for l in self.lines).rstrip('\n')

    def _newline(self):
        self.r += 1
        if self.r >= self.rows:
            self.lines.pop(0)
            self.lines.append([' '] * self.cols)
            self.r = self.rows - 1

    def _erase_line(self, mode):
        line = self.lines[self.r]
        lo, hi = {0: (self.c, self.cols), 1: (0, self.c + 1), 2: (0, self.cols)}.get(mode, (0, 0))
        for i in range(lo, min(hi, self.cols)):
            line[i] = ' '

    def _csi(self, final, params):
        private = params.startswith('?')
        nums = [int(p) if p.isdigit() else None for p in params.lstrip('?').split(';')]
        n = nums[0] if nums and nums[0] else 1
        if private:
            return
        if final == 'A':
            self.r = max(0, self.r - n)
        elif final == 'B':
            self.r = min(self.rows - 1, self.r + n)
        elif final == 'C':
            self.c = min(self.cols - 1, self.c + n)
        elif final == 'D':
            self.c = max(0, self.c - n)
        elif final == 'E':
            self.r, self.c = min(self.rows - 1, self.r + n), 0
        elif final == 'F':
            self.r, self.c = max(0, self.r - n), 0
        elif final == 'G':
            self.c = min(self.cols - 1, n - 1)
        elif final in 'Hf':
            row = nums[0] if nums and nums[0] else 1
            col = nums[1] if len(nums) > 1 and nums[1] else 1
            self.r, self.c = min(self.rows, row) - 1, min(self.cols, col) - 1
        elif final == 'K':
            self._erase_line(nums[0] or 0 if nums else 0)
        elif final == 'J':
            mode = nums[0] or 0 if nums else 0
            if mode in (2, 3):
                self.lines = [[' '] * self.cols for _ in range(self.rows)]
            elif mode == 0:
                self._erase_line(0)
                for l in self.lines[self.r + 1:]:
                    l[:] = [' '] * self.cols
        elif final == 's':
            self.saved = (self.r, self.c)
        elif final == 'u':
            self.r, self.c = self.saved

    def feed(self, s):
        for ch in s:
            if self.state == 'esc':
                if ch == '[':
                    self.state, self.params = 'csi', ''
                elif ch == ']':
                    self.state = 'osc'
                else:
                    if ch == '7':
                        self.saved = (self.r, self.c)
                    elif ch == '8':
                        self.r, self.c = self.saved
                    self.state = 'text'
            elif self.state == 'csi':
                if '@' <= ch <= '~':
                    self._csi(ch, self.params)
                    self.state = 'text'
                else:
                    self.params += ch
            elif self.state == 'osc':
                if ch in '\x07\x9c':
                    self.state = 'text'
            elif ch == '\x1b':
                self.state = 'esc'
            elif ch == '\r':
                self.c = 0
            elif ch == '\n':
                self._newline()
            elif ch == '\b':
                self.c = max(0, self.c - 1)
            elif ch >= ' ':
                if self.c >= self.cols:
                    self.c = 0
                    self._newline()
                self.lines[self.r][self.c] = ch
                self.c += 1


def main():
    spec = json.loads(sys.argv[1])
    cols, rows = spec.get('cols', 100), spec.get('rows', 30)
    deadline = time.monotonic() + spec.get('timeout', 30)
    pid, fd = pty.fork()
    if pid == 0:  # the child: pty.fork made a new session with the pty as controlling terminal
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))
        if spec.get('cwd'):
            os.chdir(spec['cwd'])
        os.execvpe(spec['argv'][0], spec['argv'], spec['env'])
    screen = Screen(cols, rows)
    decoder = codecs.getincrementaldecoder('utf-8')('replace')
    screens, status, timed_out = [], None, False

    def pump(seconds):
        """Read what the command draws for up to `seconds`; False once it has closed the pty."""
        end = min(time.monotonic() + seconds, deadline)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return True
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return True
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: every process holding the pty has gone
                return False
            if not data:
                return False
            screen.feed(decoder.decode(data))

    alive = True
    for step in spec.get('steps', []):
        pattern = re.compile(step['expect'])
        while alive and not pattern.search(screen.text()) and time.monotonic() < deadline:
            alive = pump(0.05)
        if not pattern.search(screen.text()):
            timed_out = time.monotonic() >= deadline
            break
        if step.get('settle', SETTLE) > 0:
            alive = pump(step.get('settle', SETTLE)) and alive
        screens.append(screen.text())
        os.write(fd, step['send'].encode())
    while alive and time.monotonic() < deadline:
        alive = pump(0.2)
    if alive:
        timed_out = True
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({'screens': screens, 'final': screen.text(), 'exitCode': code, 'timedOut': timed_out}))


main()
