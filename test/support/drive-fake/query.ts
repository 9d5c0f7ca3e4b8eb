// The subset of Drive's search-query language (developers.google.com/drive/api/guides/search-files)
// and partial-response `fields` syntax that backupctl sends, parsed strictly: anything else is a
// 400 from the fake, so a query the real service would reject cannot pass unnoticed here.

export interface FakeFileMeta {
  id: string;
  name: string;
  mimeType: string;
  parents: string[];
  trashed: boolean;
  appProperties: Record<string, string>;
}

type Clause = (f: FakeFileMeta) => boolean;

/** Tokens: quoted strings (with \' and \\ escapes), words, operators and braces. */
function tokenize(q: string): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < q.length) {
    const c = q[i]!;
    if (/\s/.test(c)) {
      i++;
    } else if (c === "'") {
      let s = '';
      i++;
      while (i < q.length && q[i] !== "'") {
        if (q[i] === '\\') i++;
        s += q[i++];
      }
      if (q[i] !== "'") throw new Error('unterminated string');
      i++;
      out.push(`'${s}`); // a leading quote marks a string literal
    } else if ('{}='.includes(c)) {
      out.push(c);
      i++;
    } else if (c === '!' && q[i + 1] === '=') {
      out.push('!=');
      i += 2;
    } else {
      let w = '';
      while (i < q.length && /[A-Za-z0-9_.]/.test(q[i]!)) w += q[i++];
      if (!w) throw new Error(`unexpected character ${c}`);
      out.push(w);
    }
  }
  return out;
}

/** Parse `clause and clause and ...`; supported clauses are the ones backupctl uses. */
export function parseQuery(q: string): Clause {
  const t = tokenize(q);
  let i = 0;
  const next = () => {
    if (i >= t.length) throw new Error('unexpected end of query');
    return t[i++]!;
  };
  const str = () => {
    const s = next();
    if (!s.startsWith("'")) throw new Error(`expected a string, got ${s}`);
    return s.slice(1);
  };
  const expect = (w: string) => {
    const s = next();
    if (s.toLowerCase() !== w) throw new Error(`expected ${w}, got ${s}`);
  };
  const clauses: Clause[] = [];
  for (;;) {
    const first = next();
    if (first.startsWith("'")) {
      const value = first.slice(1);
      expect('in');
      expect('parents');
      clauses.push((f) => f.parents.includes(value));
    } else if (first === 'name' || first === 'mimeType') {
      const op = next();
      const value = str();
      if (op !== '=' && op !== '!=') throw new Error(`unsupported operator ${op}`);
      const field = first;
      clauses.push((f) => (f[field] === value) === (op === '='));
    } else if (first === 'trashed') {
      expect('=');
      const v = next();
      if (v !== 'true' && v !== 'false') throw new Error('trashed takes true or false');
      clauses.push((f) => f.trashed === (v === 'true'));
    } else if (first === 'appProperties') {
      expect('has');
      expect('{');
      expect('key');
      expect('=');
      const key = str();
      expect('and');
      expect('value');
      expect('=');
      const value = str();
      expect('}');
      clauses.push((f) => f.appProperties[key] === value);
    } else {
      throw new Error(`unsupported query term ${first}`);
    }
    if (i >= t.length) break;
    expect('and');
  }
  return (f) => clauses.every((c) => c(f));
}

type FieldTree = Map<string, FieldTree | null>;

/** Parse a partial-response selector: `a,b,files(id,name),c/d` ("*" = everything). */
export function parseFields(s: string): FieldTree | null {
  if (s.trim() === '*') return null;
  let i = 0;
  const level = (): FieldTree => {
    const m: FieldTree = new Map();
    for (;;) {
      let name = '';
      while (i < s.length && /[A-Za-z0-9_*/]/.test(s[i]!)) name += s[i++];
      if (!name) throw new Error(`bad fields selector at ${i}`);
      let sub: FieldTree | null = null;
      if (s[i] === '(') {
        i++;
        sub = level();
        if (s[i] !== ')') throw new Error('unbalanced parentheses in fields');
        i++;
      }
      const [head, ...rest] = name.split('/');
      if (rest.length) sub = new Map([[rest.join('/'), sub]]);
      m.set(head!, name === '*' ? null : sub);
      while (s[i] === ' ') i++;
      if (s[i] !== ',') return m;
      i++;
      while (s[i] === ' ') i++;
    }
  };
  const tree = level();
  if (i !== s.length) throw new Error(`bad fields selector at ${i}`);
  return tree;
}

/** Keep only the selected fields of `obj` (arrays are filtered element-wise). */
export function selectFields(obj: unknown, tree: FieldTree | null): unknown {
  if (tree === null || obj === null || typeof obj !== 'object') return obj;
  if (Array.isArray(obj)) return obj.map((o) => selectFields(o, tree));
  if (tree.has('*')) return obj;
  const out: Record<string, unknown> = {};
  for (const [k, sub] of tree) {
    const v = (obj as Record<string, unknown>)[k];
    if (v !== undefined) out[k] = selectFields(v, sub);
  }
  return out;
}
