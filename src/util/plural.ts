// "1 entry", "2 entries": counts in messages agree with their noun.
export const count = (n: number, one: string, many = `${one}s`): string => `${n} ${n === 1 ? one : many}`;
