"""The catalog: the library's truth in SQLite. All SQL and its schema versions live in this
package, with the write lock that keeps one writer per library."""
