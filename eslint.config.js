// ESLint (flat config) with typescript-eslint's recommended rules, tuned to what the code base holds to:
// no unused code, no floating `any`, no import circles are checked elsewhere (madge). Run: npm run lint.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'native/build/', 'bench/results/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2023,
      sourceType: 'module',
      globals: {
        process: 'readonly',
        Buffer: 'readonly',
        console: 'readonly',
        setTimeout: 'readonly',
        clearTimeout: 'readonly',
        setInterval: 'readonly',
        clearInterval: 'readonly',
        setImmediate: 'readonly',
        queueMicrotask: 'readonly',
        performance: 'readonly',
        AbortController: 'readonly',
        AbortSignal: 'readonly',
        URL: 'readonly',
        TextEncoder: 'readonly',
        TextDecoder: 'readonly',
        structuredClone: 'readonly',
        NodeJS: 'readonly',
      },
    },
    rules: {
      // `_name` marks a deliberately unused binding (destructuring out a field, a callback's unused parameter).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      // Generic codec tables (attribute registries) type their values loosely on purpose; new code should not.
      '@typescript-eslint/no-explicit-any': 'warn',
      // Non-null assertions after a check the compiler cannot follow are common and deliberate here.
      '@typescript-eslint/no-non-null-assertion': 'off',
      // Wire codecs use `while (true)` loops and empty catch blocks with a comment saying why.
      'no-constant-condition': ['error', { checkLoops: false }],
      'no-empty': ['error', { allowEmptyCatch: true }],
      // A variable given a safe initial value before a try block it is reassigned in is deliberate (the catch and
      // finally paths read it); the rule cannot see through that.
      'no-useless-assignment': 'off',
      // `const self = this` for objects whose methods are plain functions handed to other code (transports, metric
      // collectors): the alias is what makes `this` unambiguous there.
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
);
