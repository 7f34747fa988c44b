public enum SDKPlaceholder {}
