package dev.llmops.examples;

import java.util.HashMap;
import java.util.Map;

/** "--name value" and "--flag" command-line options, nothing more (the examples need no library for it). */
final class Args {
  private final Map<String, String> values = new HashMap<>();

  Args(String[] argv, String... flags) {
    for (int i = 0; i < argv.length; i++) {
      String name = argv[i];
      if (!name.startsWith("--")) {
        throw new IllegalArgumentException("unexpected argument: " + name);
      }
      if (java.util.Arrays.asList(flags).contains(name)) {
        values.put(name, "true");
      } else if (i + 1 < argv.length) {
        values.put(name, argv[++i]);
      } else {
        throw new IllegalArgumentException(name + " needs a value");
      }
    }
  }

  String get(String name, String fallback) {
    return values.getOrDefault(name, fallback);
  }

  String require(String name) {
    String value = values.get(name);
    if (value == null || value.isEmpty()) {
      throw new IllegalArgumentException(name + " is required");
    }
    return value;
  }

  boolean flag(String name) {
    return values.containsKey(name);
  }
}
